package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, what /proc/<pid>/stat counts CPU time in (100 on every Linux build
// this runs on).
const clockTicks = 100

// cadvisor serves what a kubelet's /metrics/cadvisor would for the containers that run as
// processes here, read from their /proc: container_cpu_usage_seconds_total (user + system time,
// of the process and the children it waited for) and container_memory_working_set_bytes (the
// resident set), labelled namespace, pod and container as cAdvisor labels them. A container
// that runs nothing has no series, as a container that is not running has none. Plain HTTP,
// where a real kubelet serves HTTPS and asks for a token.
type cadvisor struct {
	containers *runtime
	listener   net.Listener
}

func startCadvisor(containers *runtime) (*cadvisor, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &cadvisor{containers: containers, listener: listener}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics/cadvisor", c.serve)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(listener) }()
	return c, nil
}

func (c *cadvisor) port() int { return c.listener.Addr().(*net.TCPAddr).Port }

func (c *cadvisor) serve(w http.ResponseWriter, _ *http.Request) {
	var cpu, memory bytes.Buffer
	now := time.Now().UnixMilli()
	for _, s := range c.containers.samples() {
		labels := fmt.Sprintf(`container=%q,id=%q,image=%q,name=%q,namespace=%q,pod=%q`,
			s.container, "/kubepods/pod"+s.uid+"/"+s.container, s.image, s.container, s.namespace, s.pod)
		fmt.Fprintf(&cpu, "container_cpu_usage_seconds_total{%s} %g %d\n", labels, s.cpuSeconds, now)
		fmt.Fprintf(&memory, "container_memory_working_set_bytes{%s} %d %d\n", labels, s.workingSetBytes, now)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.")
	fmt.Fprintln(w, "# TYPE container_cpu_usage_seconds_total counter")
	_, _ = w.Write(cpu.Bytes())
	fmt.Fprintln(w, "# HELP container_memory_working_set_bytes Current working set in bytes.")
	fmt.Fprintln(w, "# TYPE container_memory_working_set_bytes gauge")
	_, _ = w.Write(memory.Bytes())
}

// containerSample is one running container's usage, read from its process.
type containerSample struct {
	namespace, pod, container, uid, image string
	cpuSeconds                            float64
	workingSetBytes                       int64
}

// processUsage reads a process's CPU seconds (utime, stime, cutime, cstime: fields 14 to 17 of
// /proc/<pid>/stat) and resident set (VmRSS in /proc/<pid>/status).
func processUsage(pid int) (float64, int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces: count fields after its closing parenthesis.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 15 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks float64
	for _, field := range fields[11:15] { // utime stime cutime cstime (fields 14-17 overall)
		value, err := strconv.ParseFloat(field, 64)
		if err != nil {
			return 0, 0, err
		}
		ticks += value
	}
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer status.Close()
	var rss int64
	scanner := bufio.NewScanner(status)
	for scanner.Scan() {
		if line := scanner.Text(); strings.HasPrefix(line, "VmRSS:") {
			kilobytes, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			rss = kilobytes * 1024
		}
	}
	return ticks / clockTicks, rss, nil
}

// samples is every running container's usage now, in a stable order.
func (r *runtime) samples() []containerSample {
	r.mu.Lock()
	type entry struct {
		key string
		run *podRun
	}
	var runs []entry
	for key, run := range r.pods {
		runs = append(runs, entry{key, run})
	}
	r.mu.Unlock()
	sort.Slice(runs, func(i, j int) bool { return runs[i].key < runs[j].key })
	var out []containerSample
	for _, e := range runs {
		namespace, pod, _ := strings.Cut(e.key, "/")
		for _, p := range e.run.containers {
			p.mu.Lock()
			cmd := p.cmd
			p.mu.Unlock()
			if !p.running.Load() || cmd == nil || cmd.Process == nil {
				continue
			}
			cpu, rss, err := processUsage(cmd.Process.Pid)
			if err != nil {
				continue // exited meanwhile
			}
			out = append(out, containerSample{namespace: namespace, pod: pod, container: p.name, uid: string(e.run.uid),
				image: p.image, cpuSeconds: cpu, workingSetBytes: rss})
		}
	}
	return out
}
