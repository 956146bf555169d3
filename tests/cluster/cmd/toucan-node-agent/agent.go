package main

// The agent: one pod informer for every node it runs, one podWorker per pod.

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

type agent struct {
	ctx      context.Context
	client   kubernetes.Interface
	nodes    map[string]nodeConfig
	stateDir string
	ips      *ipPool
	apiPort  int
	self     string // this binary, run again as the container-init and container-run helpers
	isRoot   bool
	// runc runs the containers of container-mode nodes; nil when there are none.
	runc *runcRuntime
	// Every service and every bound pod of the cluster, for the pods' hosts files (hosts.go).
	services corelisters.ServiceLister
	pods     corelisters.PodLister

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	byName  map[string]*podWorker // "namespace/name" -> the newest worker of that name
	// namespace -> the workers whose pods have a hosts file (all but scripted ones)
	withHosts map[string]map[*podWorker]bool
	running   sync.WaitGroup
}

// images configures container mode: the image store and the cache of unpacked images.
type images struct {
	store    imageStore
	cacheDir string
}

func newAgent(ctx context.Context, client kubernetes.Interface, nodes []nodeConfig, stateDir string, ips *ipPool, apiPort int, img images) (*agent, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{podsDir(stateDir), pgidsDir(stateDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	a := &agent{
		ctx:       ctx,
		client:    client,
		nodes:     map[string]nodeConfig{},
		stateDir:  stateDir,
		ips:       ips,
		apiPort:   apiPort,
		self:      self,
		isRoot:    os.Geteuid() == 0,
		workers:   map[types.UID]*podWorker{},
		byName:    map[string]*podWorker{},
		withHosts: map[string]map[*podWorker]bool{},
	}
	for _, n := range nodes {
		a.nodes[n.Name] = n
		if n.Mode == modeContainer && a.runc == nil {
			a.runc = newRuncRuntime(stateDir, img.store, img.cacheDir)
			if a.runc.unavailable != nil {
				log.Printf("node %s: its containers will not start: %v", n.Name, a.runc.unavailable)
			} else {
				log.Printf("container mode: images from %s, unpacked into %s", img.store, img.cacheDir)
			}
		}
	}
	if !a.isRoot {
		log.Print("not root: containers run without a mount namespace, so volumes are not at their mount paths")
	}
	return a, nil
}

func podsDir(stateDir string) string  { return filepath.Join(stateDir, "pods") }
func pgidsDir(stateDir string) string { return filepath.Join(stateDir, "pgids") }

// watchPods starts the informer of every bound pod and waits for its first list.
func (a *agent) watchPods(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(a.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
		}))
	pods := factory.Core().V1().Pods()
	informer := pods.Informer()
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			a.observe(obj)
			if pod, ok := obj.(*corev1.Pod); ok {
				a.refreshHosts(pod.Namespace)
			}
		},
		UpdateFunc: func(old, obj any) {
			a.observe(obj)
			oldPod, ok1 := old.(*corev1.Pod)
			pod, ok2 := obj.(*corev1.Pod)
			if ok1 && ok2 && endpointChanged(oldPod, pod) {
				a.refreshHosts(pod.Namespace)
			}
		},
		DeleteFunc: func(obj any) {
			if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tombstone.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				a.forget(pod)
				a.refreshHosts(pod.Namespace)
			}
		},
	})
	if err != nil {
		return err
	}
	a.pods = pods.Lister()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("the pod informer did not sync")
	}
	return nil
}

// watchServices starts the informer of every service and waits for its first list. A change in
// a namespace rewrites the hosts files of this agent's pods there.
func (a *agent) watchServices(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(a.client, 0)
	services := factory.Core().V1().Services()
	informer := services.Informer()
	changed := func(obj any) {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		if svc, ok := obj.(*corev1.Service); ok {
			a.refreshHosts(svc.Namespace)
		}
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    changed,
		UpdateFunc: func(_, obj any) { changed(obj) },
		DeleteFunc: changed,
	})
	if err != nil {
		return err
	}
	a.services = services.Lister()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return fmt.Errorf("the service informer did not sync")
	}
	return nil
}

// refreshHosts rewrites the hosts files of this agent's pods in namespace.
func (a *agent) refreshHosts(namespace string) {
	a.mu.Lock()
	var workers []*podWorker
	for w := range a.withHosts[namespace] {
		workers = append(workers, w)
	}
	a.mu.Unlock()
	for _, w := range workers {
		if err := w.refreshHosts(); err != nil && a.ctx.Err() == nil {
			log.Printf("pod %s: %v", w.key(), err)
		}
	}
}

func (a *agent) observe(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	node, ours := a.nodes[pod.Spec.NodeName]
	if !ours {
		return
	}
	a.mu.Lock()
	w := a.workers[pod.UID]
	if w == nil {
		switch {
		case a.ctx.Err() != nil:
			a.mu.Unlock()
			return
		case pod.DeletionTimestamp != nil:
			// Nothing of it runs here: confirm the deletion at once.
			a.mu.Unlock()
			go a.confirmDeletion(pod)
			return
		case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
			a.mu.Unlock()
			return
		}
		w = newPodWorker(a, pod, node)
		a.workers[pod.UID] = w
		a.byName[pod.Namespace+"/"+pod.Name] = w
		if node.Mode != modeScripted {
			if a.withHosts[w.ns] == nil {
				a.withHosts[w.ns] = map[*podWorker]bool{}
			}
			a.withHosts[w.ns][w] = true
		}
		a.running.Add(1)
		go func() {
			defer a.running.Done()
			w.run()
			a.mu.Lock()
			delete(a.workers, w.uid)
			if a.byName[w.key()] == w {
				delete(a.byName, w.key())
			}
			delete(a.withHosts[w.ns], w)
			if len(a.withHosts[w.ns]) == 0 {
				delete(a.withHosts, w.ns)
			}
			a.mu.Unlock()
		}()
	}
	a.mu.Unlock()
	w.observe(pod)
}

func (a *agent) forget(pod *corev1.Pod) {
	a.mu.Lock()
	w := a.workers[pod.UID]
	a.mu.Unlock()
	if w != nil {
		w.markGone()
	}
}

func (a *agent) workerByName(namespace, name string) *podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byName[namespace+"/"+name]
}

// confirmDeletion deletes the pod for good, as the kubelet does once its containers are stopped:
// grace period zero, and only this incarnation of the name.
func (a *agent) confirmDeletion(pod *corev1.Pod) {
	err := a.client.CoreV1().Pods(pod.Namespace).Delete(a.ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: ptr.To(pod.UID)},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && a.ctx.Err() == nil {
		log.Printf("confirming the deletion of pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

// shutdown waits for every worker to stop its processes (the agent's context is cancelled).
func (a *agent) shutdown(timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		a.running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Printf("some pods did not stop within %s", timeout)
	}
}
