package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/version"
)

// ReadyAnnotation lets a test play a failing readiness probe: a pod annotated "false" runs
// but is not Ready, and becomes Ready once the annotation goes (as a probe that recovers).
const ReadyAnnotation = "podsim.pod-rebalancer.test/ready"

// HoldNewPodsAnnotation on a namespace plays slow-starting containers there: while it is "true",
// pods that have not been Ready yet run but stay unready; once it goes, they become Ready. A
// scale-up then stays in progress, as it does while new pods pull images and warm up.
const HoldNewPodsAnnotation = "podsim.pod-rebalancer.test/hold-new-pods"

// nodeSimulator does what the scheduler and a kubelet would do for the pods the tests create,
// and nothing else: it binds every unbound pod to its one node, reports bound pods Running with
// every container started (Ready unless annotated otherwise), and finishes a graceful deletion
// once the pod's deletionTimestamp has passed, with a grace-0 delete that carries the pod's UID
// as a precondition, as the kubelet does. Each pod gets an address of its own in 127.0.0.0/8.
// A container with a command runs as a process (containers.go); one without runs nothing.
type nodeSimulator struct {
	client     kubernetes.Interface
	node       string
	factory    informers.SharedInformerFactory
	pods       listersv1.PodLister
	namespaces listersv1.NamespaceLister
	synced     cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	nextIP     atomic.Uint32
	podNet     uint32 // the second octet of this node's pod addresses, 127.<podNet>.0.0/16
	containers *runtime
}

func newNodeSimulator(client kubernetes.Interface, node, dir string, podNet uint32) *nodeSimulator {
	factory := informers.NewSharedInformerFactory(client, 0)
	podInformer := factory.Core().V1().Pods()
	namespaceInformer := factory.Core().V1().Namespaces()
	s := &nodeSimulator{
		client: client, node: node, factory: factory, podNet: podNet,
		pods:       podInformer.Lister(),
		namespaces: namespaceInformer.Lister(),
		synced: func() bool {
			return podInformer.Informer().HasSynced() && namespaceInformer.Informer().HasSynced()
		},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "node-simulator"}),
	}
	s.containers = newRuntime(dir, func(key string) { s.queue.Add(key) })
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			s.queue.Add(key)
		}
	}
	_, _ = podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue, // a pod gone from the API: its processes are killed
	})
	// A namespace's hold lifted: its held pods are looked at again.
	_, _ = namespaceInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			namespace, ok := obj.(*corev1.Namespace)
			if !ok {
				return
			}
			pods, _ := s.pods.Pods(namespace.Name).List(labels.Everything())
			for _, pod := range pods {
				enqueue(pod)
			}
		},
	})
	return s
}

// registerNode creates the Node (or takes it over), Ready, with the simulated kubelet's port
// (where its cAdvisor endpoint listens) in its daemon endpoints, as a kubelet reports its own.
func (s *nodeSimulator) registerNode(ctx context.Context, kubeletPort int) error {
	nodes := s.client.CoreV1().Nodes()
	node, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   s.node,
		Labels: map[string]string{"kubernetes.io/hostname": s.node, "kubernetes.io/os": "linux", "node.pod-rebalancer.test/simulated": "true"},
	}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = nodes.Get(ctx, s.node, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("20000"),
	}
	now := metav1.Now()
	node.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity, Phase: corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "node simulator", LastHeartbeatTime: now, LastTransitionTime: now}},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: s.node}},
		NodeInfo:        corev1.NodeSystemInfo{KubeletVersion: version.Get().GitVersion, OperatingSystem: "linux", Architecture: "amd64"},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(kubeletPort)}},
	}
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

func (s *nodeSimulator) run(ctx context.Context) {
	s.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.synced) {
		return
	}
	for range 8 {
		go func() {
			for s.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	s.queue.ShutDown()
	s.containers.shutdown()
}

func (s *nodeSimulator) next(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if err := s.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "node simulator: %s: %v (retrying)\n", key, err)
		}
		s.queue.AddRateLimited(key)
		return true
	}
	s.queue.Forget(key)
	return true
}

func (s *nodeSimulator) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := s.pods.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		s.containers.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case pod.Spec.NodeName == "":
		if pod.DeletionTimestamp != nil {
			return nil // the API server removes an unbound pod at once
		}
		return s.bind(ctx, pod)
	case pod.Spec.NodeName != s.node:
		return nil
	case pod.DeletionTimestamp != nil:
		return s.finishDeletion(ctx, key, pod)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return nil
	default:
		return s.reportRunning(ctx, key, pod)
	}
}

func (s *nodeSimulator) bind(ctx context.Context, pod *corev1.Pod) error {
	err := s.client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: s.node},
	}, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone, or bound meanwhile: the informer brings the next state
	}
	return err
}

// finishDeletion removes the pod as a kubelet would once its containers have stopped. Running
// processes get SIGTERM at once and SIGKILL when the grace period the API server set is over
// (deletionTimestamp is the moment of the delete plus the grace period); a pod that runs no
// process waits out its grace period, as a container that ignores SIGTERM would.
func (s *nodeSimulator) finishDeletion(ctx context.Context, key string, pod *corev1.Pod) error {
	deadline := pod.DeletionTimestamp.Time
	if hasCommand(pod) {
		if !s.containers.terminate(key, pod.UID, deadline) {
			s.queue.AddAfter(key, max(time.Until(deadline), 0)+10*time.Millisecond)
			return nil // a process's exit enqueues the pod again
		}
	} else if remaining := time.Until(deadline); remaining > 0 {
		s.queue.AddAfter(key, remaining)
		return nil
	}
	zero := int64(0)
	err := s.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func (s *nodeSimulator) reportRunning(ctx context.Context, key string, pod *corev1.Pod) error {
	var running map[string]containerState
	if hasCommand(pod) && pod.Status.PodIP != "" {
		if err := s.containers.ensure(key, pod); err != nil {
			return err
		}
		running = s.containers.states(key, pod.UID)
	}
	ready := pod.Annotations[ReadyAnnotation] != "false" && !(s.holding(pod.Namespace) && !conditionIs(pod, corev1.PodReady, true))
	statuses := containerStatuses(pod, running)
	for _, status := range statuses {
		ready = ready && status.Ready
	}
	if pod.Status.Phase == corev1.PodRunning && pod.Status.PodIP != "" && conditionIs(pod, corev1.PodReady, ready) &&
		sameContainers(pod.Status.ContainerStatuses, statuses) {
		return nil
	}
	updated := pod.DeepCopy()
	now := metav1.Now()
	status := &updated.Status
	status.Phase = corev1.PodRunning
	status.HostIP, status.HostIPs = "127.0.0.1", []corev1.HostIP{{IP: "127.0.0.1"}}
	if status.PodIP == "" {
		// 127.1.0.1 upwards: loopback, so a container's server on its pod IP is reachable here.
		// Loopback, so a container's server on its pod IP is reachable here; a /16 of this
		// node's own, so two control planes on one machine never hand out the same address.
		n := s.nextIP.Add(1)
		status.PodIP = fmt.Sprintf("127.%d.%d.%d", s.podNet, (n>>8)&255, n&255)
		status.PodIPs = []corev1.PodIP{{IP: status.PodIP}}
	}
	if status.StartTime == nil {
		status.StartTime = &now
	}
	readiness := corev1.ConditionFalse
	if ready {
		readiness = corev1.ConditionTrue
	}
	for _, condition := range []struct {
		kind   corev1.PodConditionType
		status corev1.ConditionStatus
	}{
		{corev1.PodReadyToStartContainers, corev1.ConditionTrue},
		{corev1.PodInitialized, corev1.ConditionTrue},
		{corev1.PodScheduled, corev1.ConditionTrue},
		{corev1.ContainersReady, readiness},
		{corev1.PodReady, readiness},
	} {
		setCondition(status, condition.kind, condition.status, now)
	}
	for i := range statuses {
		if statuses[i].State.Running != nil {
			statuses[i].State.Running.StartedAt = *status.StartTime
		}
	}
	status.ContainerStatuses = statuses
	_, err := s.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// containerStatuses: a container without a process is running and ready; one with a process is
// what its process and its probe say (waiting until the pod has an IP to start it on).
func containerStatuses(pod *corev1.Pod, running map[string]containerState) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for _, container := range pod.Spec.Containers {
		state := containerState{ready: true, running: true}
		if len(container.Command) > 0 {
			state = running[container.Name] // zero until started: not running, not ready
		}
		status := corev1.ContainerStatus{
			Name: container.Name, Image: container.Image, ImageID: "simulated://" + container.Image,
			ContainerID: "simulated://" + string(pod.UID) + "/" + container.Name,
			Ready:       state.ready, Started: &[]bool{state.running}[0], RestartCount: state.restarts,
		}
		switch {
		case state.running:
			status.State.Running = &corev1.ContainerStateRunning{}
		case state.restarts > 0:
			status.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
			status.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: state.exitCode}
		default:
			status.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		out = append(out, status)
	}
	return out
}

func sameContainers(have, want []corev1.ContainerStatus) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if have[i].Ready != want[i].Ready || have[i].RestartCount != want[i].RestartCount ||
			(have[i].State.Running != nil) != (want[i].State.Running != nil) {
			return false
		}
	}
	return true
}

func (s *nodeSimulator) holding(namespace string) bool {
	found, err := s.namespaces.Get(namespace)
	return err == nil && found.Annotations[HoldNewPodsAnnotation] == "true"
}

func conditionIs(pod *corev1.Pod, kind corev1.PodConditionType, want bool) bool {
	for _, condition := range pod.Status.Conditions {
		if condition.Type == kind {
			return (condition.Status == corev1.ConditionTrue) == want
		}
	}
	return false
}

// setCondition keeps a condition's lastTransitionTime when its status does not change.
func setCondition(status *corev1.PodStatus, kind corev1.PodConditionType, value corev1.ConditionStatus, now metav1.Time) {
	for i := range status.Conditions {
		if status.Conditions[i].Type == kind {
			if status.Conditions[i].Status != value {
				status.Conditions[i].Status, status.Conditions[i].LastTransitionTime = value, now
			}
			return
		}
	}
	status.Conditions = append(status.Conditions, corev1.PodCondition{Type: kind, Status: value, LastTransitionTime: now})
}
