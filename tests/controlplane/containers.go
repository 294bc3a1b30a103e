package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// runtime is the simulated node's container runtime, for the containers that carry a command:
// it runs each as a process of its own (its own process group, its own log file), with the
// environment a kubelet would give it, restarts it when it exits (restartPolicy Always), judges
// its readiness with its readiness probe, and stops it the kubelet's way at a graceful deletion:
// SIGTERM at once, SIGKILL when the grace period is over. Containers without a command run
// nothing, as before: they are Running and Ready from the start.
type runtime struct {
	dir    string
	notify func(key string) // the pod's state changed: look at it again
	mu     sync.Mutex
	pods   map[string]*podRun // by namespace/name
}

type podRun struct {
	uid        types.UID
	containers []*process
}

// process is one container's process and what the kubelet knows of it.
type process struct {
	name     string
	image    string
	restarts atomic.Int32
	ready    atomic.Bool
	running  atomic.Bool
	stopping atomic.Bool
	exitCode atomic.Int32
	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the current process has exited
	stopped  chan struct{} // closed when the container will not be started again
}

func newRuntime(dir string, notify func(string)) *runtime {
	return &runtime{dir: dir, notify: notify, pods: map[string]*podRun{}}
}

func hasCommand(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if len(c.Command) > 0 {
			return true
		}
	}
	return false
}

// ensure starts the pod's processes once it has an IP; a pod of the same name but another UID
// (a new pod reusing the name) first has the old one's processes killed.
func (r *runtime) ensure(key string, pod *corev1.Pod) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run, ok := r.pods[key]; ok {
		if run.uid == pod.UID {
			return nil
		}
		go run.kill()
		delete(r.pods, key)
	}
	run := &podRun{uid: pod.UID}
	for i := range pod.Spec.Containers {
		spec := &pod.Spec.Containers[i]
		if len(spec.Command) == 0 {
			continue
		}
		p := &process{name: spec.Name, image: spec.Image, exited: make(chan struct{}), stopped: make(chan struct{})}
		close(p.exited)
		run.containers = append(run.containers, p)
		argv, env, err := commandLine(pod, spec)
		if err != nil {
			return fmt.Errorf("container %s: %w", spec.Name, err)
		}
		logPath := filepath.Join(r.dir, fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, spec.Name))
		go r.supervise(key, p, argv, env, spec.WorkingDir, logPath)
		if probe := spec.ReadinessProbe; probe != nil {
			go r.probe(key, p, pod, spec, probe)
		}
	}
	r.pods[key] = run
	return nil
}

// supervise keeps the container's process running until it is stopped, restarting it after a
// back-off (1 s, doubling to 10 s) as a kubelet does under restartPolicy Always.
func (r *runtime) supervise(key string, p *process, argv, env []string, workdir, logPath string) {
	backoff := time.Second
	for !p.stopping.Load() {
		log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "node simulator: %s: open %s: %v\n", key, logPath, err)
			return
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, workdir, log, log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		exited := make(chan struct{})
		p.mu.Lock()
		if p.stopping.Load() {
			p.mu.Unlock()
			log.Close()
			break
		}
		err = cmd.Start()
		if err == nil {
			p.cmd, p.exited = cmd, exited
			p.running.Store(true)
		}
		p.mu.Unlock()
		if err != nil {
			fmt.Fprintf(log, "node simulator: cannot start %v: %v\n", argv, err)
			log.Close()
			p.exitCode.Store(128)
		} else {
			r.notify(key)
			_ = cmd.Wait()
			log.Close()
			p.exitCode.Store(int32(cmd.ProcessState.ExitCode()))
			p.running.Store(false)
			p.ready.Store(false)
			close(exited)
		}
		r.notify(key)
		if p.stopping.Load() {
			break
		}
		p.restarts.Add(1)
		time.Sleep(backoff)
		backoff = min(2*backoff, 10*time.Second)
	}
	close(p.stopped)
	r.notify(key)
}

// probe runs the readiness probe every period from the initial delay, as the kubelet's prober
// does: ready after successThreshold successes in a row, unready after failureThreshold failures.
func (r *runtime) probe(key string, p *process, pod *corev1.Pod, spec *corev1.Container, probe *corev1.Probe) {
	period := time.Duration(max(probe.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(probe.TimeoutSeconds, 1)) * time.Second
	success, failure := max(probe.SuccessThreshold, 1), max(probe.FailureThreshold, 1)
	time.Sleep(time.Duration(probe.InitialDelaySeconds) * time.Second)
	var passes, fails int32
	ip := pod.Status.PodIP
	for {
		select {
		case <-p.stopped:
			return
		default:
		}
		if !p.running.Load() {
			passes, fails = 0, 0
		} else if probeOnce(ip, spec, probe, timeout) {
			passes, fails = passes+1, 0
			if passes >= success && !p.ready.Swap(true) {
				r.notify(key)
			}
		} else {
			passes, fails = 0, fails+1
			if fails >= failure && p.ready.Swap(false) {
				r.notify(key)
			}
		}
		time.Sleep(period)
	}
}

func probeOnce(ip string, spec *corev1.Container, probe *corev1.Probe, timeout time.Duration) bool {
	switch {
	case probe.HTTPGet != nil:
		port, err := resolvePort(probe.HTTPGet.Port, spec)
		if err != nil {
			return false
		}
		host := probe.HTTPGet.Host
		if host == "" {
			host = ip
		}
		address := "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + probe.HTTPGet.Path
		response, err := (&http.Client{Timeout: timeout}).Get(address)
		if err != nil {
			return false
		}
		response.Body.Close()
		return response.StatusCode >= 200 && response.StatusCode < 400
	case probe.TCPSocket != nil:
		port, err := resolvePort(probe.TCPSocket.Port, spec)
		if err != nil {
			return false
		}
		connection, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), timeout)
		if err != nil {
			return false
		}
		connection.Close()
		return true
	case probe.Exec != nil && len(probe.Exec.Command) > 0:
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return exec.CommandContext(ctx, probe.Exec.Command[0], probe.Exec.Command[1:]...).Run() == nil
	}
	return true
}

func resolvePort(port intstr.IntOrString, spec *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range spec.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("no container port named %q", port.StrVal)
}

// commandLine is the container's argv and environment as a kubelet builds them: the image's
// environment (here the simulator's own), then the container's env with downward-API fields
// resolved and $(VAR) references expanded, in order; command and args expanded likewise.
func commandLine(pod *corev1.Pod, spec *corev1.Container) ([]string, []string, error) {
	vars := map[string]string{}
	env := append([]string{}, os.Environ()...)
	mapping := expansion.MappingFuncFor(vars)
	for _, e := range spec.Env {
		value := expansion.Expand(e.Value, mapping)
		if e.ValueFrom != nil {
			if e.ValueFrom.FieldRef == nil {
				return nil, nil, fmt.Errorf("env %s: only fieldRef is supported by the node simulator", e.Name)
			}
			resolved, err := podField(pod, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			value = resolved
		}
		vars[e.Name] = value
		env = append(env, e.Name+"="+value)
	}
	var argv []string
	for _, word := range append(append([]string{}, spec.Command...), spec.Args...) {
		argv = append(argv, expansion.Expand(word, mapping))
	}
	return argv, env, nil
}

// podField is the downward API's fieldRef: metadata through the kubelet's own helper, and the
// status and spec fields the kubelet fills in itself.
func podField(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

// status is what the kubelet would report of one container (nil: it runs no process here).
type containerState struct {
	ready, running bool
	restarts       int32
	exitCode       int32
}

func (r *runtime) states(key string, uid types.UID) map[string]containerState {
	r.mu.Lock()
	run, ok := r.pods[key]
	r.mu.Unlock()
	if !ok || run.uid != uid {
		return nil
	}
	out := map[string]containerState{}
	for _, p := range run.containers {
		out[p.name] = containerState{ready: p.ready.Load() && p.running.Load(), running: p.running.Load(),
			restarts: p.restarts.Load(), exitCode: p.exitCode.Load()}
	}
	return out
}

// terminate is a graceful deletion's part: SIGTERM to every container's process group once, and
// SIGKILL when the deadline has passed. It reports whether every process has exited.
func (r *runtime) terminate(key string, uid types.UID, deadline time.Time) bool {
	r.mu.Lock()
	run, ok := r.pods[key]
	r.mu.Unlock()
	if !ok || run.uid != uid {
		return true
	}
	done := true
	for _, p := range run.containers {
		first := !p.stopping.Swap(true)
		p.mu.Lock()
		cmd, exited := p.cmd, p.exited
		p.mu.Unlock()
		select {
		case <-exited:
			continue
		default:
		}
		switch {
		case time.Now().After(deadline):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		case first:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			done = false
		default:
			done = false
		}
	}
	return done
}

// forget kills whatever still runs for a pod that is gone from the API.
func (r *runtime) forget(key string) {
	r.mu.Lock()
	run, ok := r.pods[key]
	delete(r.pods, key)
	r.mu.Unlock()
	if ok {
		run.kill()
	}
}

func (run *podRun) kill() {
	for _, p := range run.containers {
		p.stopping.Store(true)
		p.mu.Lock()
		cmd, exited := p.cmd, p.exited
		p.mu.Unlock()
		select {
		case <-exited:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
}

// shutdown stops every process when the node goes away: SIGTERM, then SIGKILL after 5 s.
func (r *runtime) shutdown() {
	r.mu.Lock()
	runs := make([]*podRun, 0, len(r.pods))
	for _, run := range r.pods {
		runs = append(runs, run)
	}
	r.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for _, run := range runs {
		for _, p := range run.containers {
			p.stopping.Store(true)
			p.mu.Lock()
			cmd := p.cmd
			p.mu.Unlock()
			if cmd != nil && cmd.Process != nil {
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			}
		}
	}
	for _, run := range runs {
		for _, p := range run.containers {
			p.mu.Lock()
			exited := p.exited
			p.mu.Unlock()
			select {
			case <-exited:
			case <-time.After(time.Until(deadline)):
				run.kill()
			}
		}
	}
}
