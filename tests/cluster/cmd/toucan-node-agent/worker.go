package main

// podWorker: the life of one pod on a node, from its binding to the confirmation of its deletion.

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	// When the agent itself stops, pods get at most this long to exit.
	shutdownGrace      = 3 * time.Second
	statusPatchRetries = 5
	// The longest a message may be in a container's terminated state, as the kubelet caps it.
	maxTerminationMessage = 4096
)

type podWorker struct {
	a    *agent
	node nodeConfig
	uid  types.UID
	ns   string
	name string
	dir  string // this pod's volumes, logs and container specs

	mu         sync.Mutex
	pod        *corev1.Pod // the newest version seen
	podIP      string
	startTime  metav1.Time
	sandboxUp  bool
	initDone   bool
	initFailed bool
	// Set when the agent failed the pod itself (activeDeadlineSeconds): status.reason, message.
	failReason  string
	failMessage string
	init        []*containerState
	main        []*containerState
	conditions  map[corev1.PodConditionType]corev1.PodCondition

	updates  chan struct{} // a new version of the pod arrived
	gone     chan struct{} // the pod is no longer in the API
	goneOnce sync.Once

	flushMu  sync.Mutex
	lastSent []byte

	// The pod's hosts file (hosts.go): written while live, and the content last written.
	hostsMu      sync.Mutex
	hostsLive    bool
	hostsWritten []byte
}

// containerState is what the worker knows of one container; guarded by podWorker.mu.
type containerState struct {
	spec      corev1.Container
	state     corev1.ContainerState
	lastState corev1.ContainerState
	restarts  int32
	// A restart is due: restarts goes up when the new instance starts.
	restartPending bool
	started        bool
	ready          bool
	// The image's name and manifest digest, once container mode has found it in the store.
	imageID string
	// The running instance: its first process's pid (also its process group) and log file.
	pid     int
	logPath string
}

func newPodWorker(a *agent, pod *corev1.Pod, node nodeConfig) *podWorker {
	w := &podWorker{
		a:          a,
		node:       node,
		uid:        pod.UID,
		ns:         pod.Namespace,
		name:       pod.Name,
		dir:        filepath.Join(podsDir(a.stateDir), string(pod.UID)),
		pod:        pod,
		startTime:  metav1.Now(),
		conditions: map[corev1.PodConditionType]corev1.PodCondition{},
		updates:    make(chan struct{}, 1),
		gone:       make(chan struct{}),
	}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	for _, c := range pod.Spec.InitContainers {
		w.init = append(w.init, &containerState{spec: c, state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}})
	}
	if len(w.init) > 0 {
		w.init[0].state = waiting
		waiting = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
	}
	for _, c := range pod.Spec.Containers {
		w.main = append(w.main, &containerState{spec: c, state: waiting})
	}
	return w
}

func (w *podWorker) key() string { return w.ns + "/" + w.name }

func (w *podWorker) observe(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	select {
	case w.updates <- struct{}{}:
	default:
	}
}

func (w *podWorker) latest() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) markGone() { w.goneOnce.Do(func() { close(w.gone) }) }

// run is the pod's life: set up, run its containers until they are done or the pod is deleted,
// then confirm the deletion and clean up.
func (w *podWorker) run() {
	pod := w.latest()
	defer os.RemoveAll(w.dir)
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		log.Printf("pod %s: %v", w.key(), err)
		return
	}
	ip := nodeIP
	if !pod.Spec.HostNetwork {
		var err error
		if ip, err = w.a.ips.allocate(); err != nil {
			log.Printf("pod %s: %v", w.key(), err)
			return
		}
		defer w.a.ips.release(ip)
	}
	w.mu.Lock()
	w.podIP = ip
	w.sandboxUp = true
	w.mu.Unlock()
	if w.node.Mode != modeScripted {
		// Before its first container starts; kept current while they run.
		defer w.stopHosts()
		if err := w.startHosts(); err != nil {
			log.Printf("pod %s: %v", w.key(), err)
		}
	}
	w.flush()

	// The containers' context ends when the pod is being deleted, is gone, or the agent stops.
	ctx, cancel := context.WithCancel(w.a.ctx)
	defer cancel()
	go func() {
		w.waitDeleting(ctx)
		cancel()
	}()
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil {
		deadline := time.AfterFunc(time.Until(w.startTime.Add(time.Duration(*d)*time.Second)), func() {
			w.mu.Lock()
			w.failReason = "DeadlineExceeded"
			w.failMessage = fmt.Sprintf("Pod was active on the node longer than the specified deadline (%ds)", *d)
			w.mu.Unlock()
			cancel()
		})
		defer deadline.Stop()
	}
	switch w.node.Mode {
	case modeScripted:
		w.runScripted(ctx)
	default:
		w.runContainers(ctx)
	}
	cancel()
	w.stopHosts()
	w.flush()

	// Done, by itself or because it is being deleted: wait for the deletion, then confirm it.
	w.waitDeleting(w.a.ctx)
	if w.a.ctx.Err() != nil {
		return
	}
	select {
	case <-w.gone:
	default:
		w.a.confirmDeletion(w.latest())
	}
}

// waitDeleting returns once the pod has a deletion timestamp or is gone, or ctx ends.
func (w *podWorker) waitDeleting(ctx context.Context) {
	for {
		if w.latest().DeletionTimestamp != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.gone:
			return
		case <-w.updates:
			// Let the other waiter see this update too.
			if w.latest().DeletionTimestamp == nil {
				continue
			}
			select {
			case w.updates <- struct{}{}:
			default:
			}
			return
		}
	}
}

// gracePeriod is how long the containers get between SIGTERM and SIGKILL.
func (w *podWorker) gracePeriod() time.Duration {
	if w.a.ctx.Err() != nil {
		return shutdownGrace
	}
	pod := w.latest()
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// update changes the worker's state under its lock and then sends the new status.
func (w *podWorker) update(change func()) {
	w.mu.Lock()
	change()
	w.mu.Unlock()
	w.flush()
}

// flush patches the pod's status when it differs from the last one sent.
func (w *podWorker) flush() {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	status := w.statusLocked()
	w.mu.Unlock()
	data, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": w.uid},
		"status":   status,
	})
	if err != nil {
		log.Printf("pod %s: encoding its status: %v", w.key(), err)
		return
	}
	if string(data) == string(w.lastSent) {
		return
	}
	for attempt := 1; ; attempt++ {
		_, err = w.a.client.CoreV1().Pods(w.ns).Patch(w.a.ctx, w.name, types.MergePatchType, data, metav1.PatchOptions{}, "status")
		if err == nil {
			w.lastSent = data
			return
		}
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) || w.a.ctx.Err() != nil {
			return
		}
		if attempt == statusPatchRetries {
			log.Printf("pod %s: patching its status: %v", w.key(), err)
			return
		}
		time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
	}
}

func (w *podWorker) containerID(c *containerState) string {
	if w.node.Mode == modeContainer {
		return "runc://" + w.a.runc.containerName(w.uid, c.spec.Name, c.restarts)
	}
	return fmt.Sprintf("toucan://%s-%s-%d", w.uid, c.spec.Name, c.restarts)
}
