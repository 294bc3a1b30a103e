package main

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/component-base/version"
)

// Only the controllers whose behaviour the function meets. Left out on purpose:
// node-lifecycle and taint-eviction (they would mark the simulated node NotReady and evict
// its pods), pod-garbage-collector (it deletes pods of nodes it thinks gone), and the
// horizontal-pod-autoscaler controller (without a metrics API it can only write failures).
const controllers = "deployment-controller,replicaset-controller,disruption-controller," +
	"garbage-collector-controller,namespace-controller,serviceaccount-controller"

const auditPolicyYAML = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["admin"]
  - level: None
    nonResourceURLs: ["/readyz*", "/healthz*", "/livez*", "/version"]
  - level: Metadata
`

// readyInfo is what `up` writes to <dir>/ready.json once every part answers: the fixtures
// wait for that file rather than guessing at ports.
type readyInfo struct {
	Server          string  `json:"server"`
	AdminKubeconfig string  `json:"admin_kubeconfig"`
	CAFile          string  `json:"ca_file"`
	AuditLog        string  `json:"audit_log"`
	Version         string  `json:"version"`
	Node            string  `json:"node"`
	Cadvisor        string  `json:"cadvisor"` // the simulated kubelet's /metrics/cadvisor
	Etcd            string  `json:"etcd"`     // etcd's own client URL (not --etcd-via's), for `backdate`
	PID             int     `json:"pid"`
	StartedSeconds  float64 `json:"started_seconds"`
}

func freePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "controlplane: %s: %v\n", what, err)
		os.Exit(1)
	}
}

func up(args []string) {
	flags := flag.NewFlagSet("up", flag.ExitOnError)
	dir := flags.String("dir", "", "working directory (etcd data, certificates, kubeconfigs, logs)")
	nodeName := flags.String("node", "sim-node-0", "name of the simulated node")
	verbosity := flags.Int("v", 0, "klog verbosity of the API server and the controller manager")
	timeout := flags.Duration("timeout", 3*time.Minute, "how long to wait for every part to be ready")
	etcdPort := flags.Int("etcd-port", 0, "etcd's client port (0: any free one)")
	etcdVia := flags.String("etcd-via", "", "host:port kube-apiserver dials for etcd instead of etcd's own "+
		"(a fault proxy in front of it: the fault tests stall etcd behind one)")
	_ = flags.Parse(args)
	if *dir == "" {
		must(fmt.Errorf("--dir is required"), "usage")
	}
	started := time.Now()
	must(os.MkdirAll(*dir, 0o700), "create the working directory")
	// SIGHUP too (a closed terminal): every part is then stopped in order, not left to Pdeathsig.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()

	etcdServer, etcdOwnURL := startEtcd(*dir, *etcdPort)
	defer etcdServer.Close()
	etcdURL := etcdOwnURL
	if *etcdVia != "" {
		etcdURL = "http://" + *etcdVia
	}

	files := writeCredentials(*dir)
	auditPolicy := filepath.Join(*dir, "audit-policy.yaml")
	must(writeFile(auditPolicy, []byte(auditPolicyYAML)), "write the audit policy")
	apiPort, err := freePort()
	must(err, "pick a port for kube-apiserver")
	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	adminKubeconfig := filepath.Join(*dir, "admin.kubeconfig")
	must(writeKubeconfig(adminKubeconfig, server, files), "write the admin kubeconfig")

	self, err := os.Executable()
	must(err, "find this executable")
	apiserver := spawn(*dir, "kube-apiserver", self,
		"--etcd-servers="+etcdURL,
		"--secure-port="+strconv.Itoa(apiPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The endpoint reconciler refuses a loopback address; nothing here needs the
		// kubernetes Service's endpoints.
		"--endpoint-reconciler-type=none",
		"--cert-dir="+filepath.Join(*dir, "apiserver-certs"),
		"--tls-cert-file="+files.servingCert,
		"--tls-private-key-file="+files.servingKey,
		"--client-ca-file="+files.ca,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+files.saPublic,
		"--service-account-signing-key-file="+files.saPrivate,
		// The ServiceAccount admission plugin would refuse pods in a namespace until its
		// default ServiceAccount exists; envtest disables it for the same reason.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		// The request log the tests read: every request but the admin's (set-up, controllers,
		// the node simulator), one JSON line each, written before the answer goes out.
		"--audit-policy-file="+auditPolicy,
		"--audit-log-path="+filepath.Join(*dir, "audit.log"),
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--v="+strconv.Itoa(*verbosity),
	)
	defer terminate(apiserver)

	config, err := clientcmd.BuildConfigFromFlags("", adminKubeconfig)
	must(err, "load the admin kubeconfig")
	// The node simulator writes a status per pod; at client-go's default 5 QPS a Deployment of
	// thousands would take minutes to become Ready.
	config.QPS, config.Burst = 2000, 4000
	client, err := kubernetes.NewForConfig(config)
	must(err, "build a client")
	waitFor(ctx, *timeout, []*child{apiserver}, "kube-apiserver /readyz", func() bool { return apiReady(config) })
	waitFor(ctx, *timeout, []*child{apiserver}, "the default namespace", func() bool {
		_, err := client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	})

	kcmPort, err := freePort()
	must(err, "pick a port for kube-controller-manager")
	controllerManager := spawn(*dir, "kube-controller-manager", self,
		"--kubeconfig="+adminKubeconfig,
		"--authentication-kubeconfig="+adminKubeconfig,
		"--authorization-kubeconfig="+adminKubeconfig,
		"--leader-elect=false",
		"--controllers="+controllers,
		"--use-service-account-credentials=false",
		"--secure-port="+strconv.Itoa(kcmPort),
		"--bind-address=127.0.0.1",
		"--cert-dir="+filepath.Join(*dir, "kcm-certs"),
		"--root-ca-file="+files.ca,
		// Its client defaults to 20 QPS: a ReplicaSet of 10,000 would take minutes to fill.
		"--kube-api-qps=1000",
		"--kube-api-burst=2000",
		"--v="+strconv.Itoa(*verbosity),
	)
	defer terminate(controllerManager)
	waitFor(ctx, *timeout, []*child{apiserver, controllerManager}, "kube-controller-manager /healthz", func() bool {
		return httpsOK("https://127.0.0.1:" + strconv.Itoa(kcmPort) + "/healthz")
	})

	podLogs := filepath.Join(*dir, "pods")
	must(os.MkdirAll(podLogs, 0o700), "create the pod log directory")
	podNet, release, err := claimPodNetwork()
	must(err, "claim a pod network")
	defer release()
	simulator := newNodeSimulator(client, *nodeName, podLogs, podNet)
	kubelet, err := startCadvisor(simulator.containers)
	must(err, "listen for the simulated kubelet's cAdvisor endpoint")
	must(simulator.registerNode(ctx, kubelet.port()), "register the simulated node")
	go simulator.run(ctx)
	waitFor(ctx, *timeout, []*child{apiserver, controllerManager}, "the node simulator's informer", simulator.synced)

	info := readyInfo{
		Server: server, AdminKubeconfig: adminKubeconfig, CAFile: files.ca,
		AuditLog: filepath.Join(*dir, "audit.log"),
		Version:  version.Get().GitVersion, Node: *nodeName, PID: os.Getpid(),
		Cadvisor:       fmt.Sprintf("http://127.0.0.1:%d/metrics/cadvisor", kubelet.port()),
		Etcd:           etcdOwnURL,
		StartedSeconds: time.Since(started).Seconds(),
	}
	// From here on a kube-apiserver that exits is started again, as a kubelet restarts a static
	// pod: the fault tests kill it in the middle of an invocation (etcd, in this process, keeps
	// the data). The deferred terminate above then finds the first one gone already.
	apiserverKept := supervise(ctx, apiserver)
	defer apiserverKept.terminate()

	writeReady(*dir, info)
	fmt.Printf("controlplane: ready in %.1fs at %s (%s)\n", info.StartedSeconds, server, info.Version)

	// Run until told to stop, or until a child dies for good: a half control plane must not look whole.
	select {
	case <-ctx.Done():
	case <-apiserverKept.gaveUp:
		fmt.Fprintln(os.Stderr, "controlplane: kube-apiserver kept exiting; see kube-apiserver.log")
	case <-controllerManager.done:
		fmt.Fprintln(os.Stderr, "controlplane: kube-controller-manager exited; see kube-controller-manager.log")
	}
	os.Remove(filepath.Join(*dir, "ready.json"))
}

// claimPodNetwork claims a /16 of 127.0.0.0/8 for this node's pod addresses, 127.N.0.0/16 with
// N from 2 to 254, by holding an exclusive lock on a file named after it for as long as this
// process lives (the kernel drops the lock when it exits, however it exits). Two control planes
// on one machine, say a test session's and `make try`'s, then never give two pods one address.
func claimPodNetwork() (uint32, func(), error) {
	dir := filepath.Join(os.TempDir(), "pod-rebalancer-pod-networks")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, nil, err
	}
	for n := uint32(2); n <= 254; n++ {
		file, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("127.%d.lock", n)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, nil, err
		}
		if syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			return n, func() { file.Close() }, nil
		}
		file.Close()
	}
	return 0, nil, fmt.Errorf("every pod network 127.2.0.0/16 to 127.254.0.0/16 is claimed by another control plane")
}

func startEtcd(dir string, clientPort int) (*embed.Etcd, string) {
	var err error
	if clientPort == 0 {
		clientPort, err = freePort()
		must(err, "pick a port for etcd")
	}
	peerPort, err := freePort()
	must(err, "pick a peer port for etcd")
	cfg := embed.NewConfig()
	cfg.Name = "controlplane"
	cfg.Dir = filepath.Join(dir, "etcd")
	clientURL, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(clientPort))
	peerURL, _ := url.Parse("http://127.0.0.1:" + strconv.Itoa(peerPort))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*clientURL}, []url.URL{*clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peerURL}, []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// A test cluster's data lives as long as the test session: durability buys nothing.
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(dir, "etcd.log")}
	server, err := embed.StartEtcd(cfg)
	must(err, "start etcd")
	select {
	case <-server.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		must(fmt.Errorf("not ready after 60s"), "start etcd")
	}
	return server, clientURL.String()
}

type credentialFiles struct {
	ca, servingCert, servingKey, adminCert, adminKey, saPrivate, saPublic string
}

func writeCredentials(dir string) credentialFiles {
	ca, err := newAuthority()
	must(err, "create the CA")
	files := credentialFiles{ca: filepath.Join(dir, "ca.crt")}
	must(writeFile(files.ca, ca.pem), "write the CA")
	servingCert, servingKey, err := ca.issue(2, pkix.Name{CommonName: "kube-apiserver"}, true)
	must(err, "issue the serving certificate")
	files.servingCert, files.servingKey = filepath.Join(dir, "apiserver.crt"), filepath.Join(dir, "apiserver.key")
	must(writeFile(files.servingCert, servingCert), "write the serving certificate")
	must(writeFile(files.servingKey, servingKey), "write the serving key")
	// The admin is in system:masters; the controller manager and the simulator use it too.
	adminCert, adminKey, err := ca.issue(3, pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}}, false)
	must(err, "issue the admin certificate")
	files.adminCert, files.adminKey = filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key")
	must(writeFile(files.adminCert, adminCert), "write the admin certificate")
	must(writeFile(files.adminKey, adminKey), "write the admin key")
	files.saPrivate, files.saPublic, err = writeServiceAccountKey(dir)
	must(err, "write the ServiceAccount signing key")
	return files
}

func writeKubeconfig(path, server string, files credentialFiles) error {
	config := clientcmdapi.NewConfig()
	config.Clusters["controlplane"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: files.ca}
	config.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificate: files.adminCert, ClientKey: files.adminKey}
	config.Contexts["admin"] = &clientcmdapi.Context{Cluster: "controlplane", AuthInfo: "admin"}
	config.CurrentContext = "admin"
	return clientcmd.WriteToFile(*config, path)
}

func writeReady(dir string, info readyInfo) {
	data, err := json.MarshalIndent(info, "", "  ")
	must(err, "encode ready.json")
	partial := filepath.Join(dir, "ready.json.partial")
	must(os.WriteFile(partial, data, 0o600), "write ready.json")
	// A rename, so that a reader never sees half a file.
	must(os.Rename(partial, filepath.Join(dir, "ready.json")), "write ready.json")
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	args []string // what it was started with, to start it again
	dir  string
	self string
}

// supervisor keeps one child running: when it exits while the control plane runs, it is started
// again with the same flags a second later. More than five exits within a minute is a crash loop:
// it gives up, and the control plane stops.
type supervisor struct {
	mu      sync.Mutex
	current *child
	gaveUp  chan struct{}
}

func supervise(ctx context.Context, first *child) *supervisor {
	s := &supervisor{current: first, gaveUp: make(chan struct{})}
	go func() {
		var exits []time.Time
		for {
			s.mu.Lock()
			c := s.current
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-c.done:
			}
			now := time.Now()
			recent := exits[:0]
			for _, at := range exits {
				if now.Sub(at) < time.Minute {
					recent = append(recent, at)
				}
			}
			exits = append(recent, now)
			if len(exits) > 5 {
				close(s.gaveUp)
				return
			}
			fmt.Fprintf(os.Stderr, "controlplane: %s exited (%v); starting it again\n", c.name, c.cmd.ProcessState)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			next := spawn(c.dir, c.name, c.self, c.args...)
			s.mu.Lock()
			s.current = next
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *supervisor) terminate() {
	s.mu.Lock()
	c := s.current
	s.mu.Unlock()
	terminate(c)
}

// spawn runs one component as a child process of this same binary: the API server and the
// controller manager each install process-wide signal handlers and logging, so they cannot
// share a process. Pdeathsig ends them if this process dies without cleaning up.
func spawn(dir, name, self string, args ...string) *child {
	// Appended to: a component started again keeps what the one before it wrote.
	log, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	must(err, "open "+name+".log")
	cmd := exec.Command(self, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(cmd.Start(), "start "+name)
	c := &child{name: name, cmd: cmd, done: make(chan struct{}), args: args, dir: dir, self: self}
	go func() { _ = cmd.Wait(); log.Close(); close(c.done) }()
	return c
}

func terminate(c *child) {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// waitFor polls ready() until it holds, failing at once when a child it depends on has exited.
func waitFor(ctx context.Context, timeout time.Duration, children []*child, what string, ready func() bool) {
	deadline := time.Now().Add(timeout)
	for !ready() {
		for _, c := range children {
			select {
			case <-c.done:
				must(fmt.Errorf("%s exited; see %s.log", c.name, c.name), "waiting for "+what)
			default:
			}
		}
		if ctx.Err() != nil {
			must(ctx.Err(), "waiting for "+what)
		}
		if time.Now().After(deadline) {
			must(fmt.Errorf("not ready after %s", timeout), "waiting for "+what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func apiReady(config *rest.Config) bool {
	transport, err := rest.TransportFor(config)
	if err != nil {
		return false
	}
	response, err := (&http.Client{Transport: transport, Timeout: 2 * time.Second}).Get(config.Host + "/readyz")
	if err != nil {
		return false
	}
	response.Body.Close()
	return response.StatusCode == http.StatusOK
}

// httpsOK asks a component's self-signed health endpoint; only its answer matters here.
func httpsOK(address string) bool {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // loopback health probe
	}}
	response, err := client.Get(address)
	if err != nil {
		return false
	}
	response.Body.Close()
	return response.StatusCode == http.StatusOK
}
