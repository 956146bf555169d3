// Command toucan-node-agent stands in for the kubelet of a test cluster. It registers the nodes of
// a nodes file and runs the pods the scheduler binds to them, each node in one of three modes:
//
//   - process: every container really runs, as a process on this machine (the image is recorded,
//     not pulled, as in toucan's local runtime), init containers first, with the pod's command,
//     args, environment (downward API included), working directory and volumes at their mount
//     paths in a private mount namespace, a loopback address of its own as the pod IP, probes,
//     restarts, real exit codes, termination messages and logs served to `kubectl logs`.
//   - container: the same, but each container runs in its image with runc (container.go): the
//     image from a store of OCI layouts on this machine (images.go), unpacked once into a cache
//     (unpack.go), with the user, security context and limits of its spec (bundle.go).
//   - scripted: no process; each pod moves through its phases as its annotations say (see
//     scripted.go), for failure injection and for scale tests with thousands of pods.
//
// Data flows one way: a pod informer (pods bound to any node) -> one podWorker per pod, which owns
// that pod's containers and is the only writer of its status -> status patches. Deleting a pod
// stops its processes and then confirms the deletion, as a kubelet does, so that controllers and
// the garbage collector see it go. The pod informer and a service informer also keep each pod's
// hosts file current: the names of the services of its namespace and their pods, in place of
// cluster DNS (hosts.go).
//
// `toucan-node-agent container-init SPEC` is the agent's own helper in process mode: it runs
// inside a container's new mount namespace, binds the volumes and execs the container's command.
// `toucan-node-agent container-run SPEC` is container mode's: it mounts the container's root in a
// mount namespace of its own and becomes runc.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
)

const (
	shutdownTimeout = 15 * time.Second
	registerTimeout = 30 * time.Second
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case containerInitCommand:
			os.Exit(containerInit(os.Args[2:]))
		case containerRunCommand:
			os.Exit(containerRun(os.Args[2:]))
		}
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix("toucan-node-agent: ")

	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the agent's user (required)")
	nodesFile := flag.String("nodes", "", "the nodes to register (YAML, required)")
	stateDir := flag.String("state-dir", "", "where pods' volumes and logs live (required)")
	apiPort := flag.Int("apiserver-port", 0, "the API server's port on 127.0.0.1, for pods' KUBERNETES_SERVICE_PORT (required)")
	imageList := flag.String("images", "", "container mode's image store: OCI layouts, or folders of them, separated by colons")
	imageCache := flag.String("image-cache", "", "where container mode unpacks images, once per manifest digest (default: STATE-DIR/image-cache)")
	flag.Parse()
	if *kubeconfig == "" || *nodesFile == "" || *stateDir == "" || *apiPort == 0 {
		flag.Usage()
		os.Exit(2)
	}
	img, err := imageConfig(*stateDir, *imageList, *imageCache)
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	if err := run(*kubeconfig, *nodesFile, *stateDir, *apiPort, img); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

// imageConfig makes every path absolute: overlayfs and runc take them as they are.
func imageConfig(stateDir, list, cacheDir string) (images, error) {
	if cacheDir == "" {
		cacheDir = filepath.Join(stateDir, "image-cache")
	}
	cache, err := filepath.Abs(cacheDir)
	if err != nil {
		return images{}, err
	}
	img := images{cacheDir: cache}
	for _, p := range filepath.SplitList(list) {
		if p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return images{}, err
		}
		img.store.paths = append(img.store.paths, abs)
	}
	return img, nil
}

func run(kubeconfig, nodesFile, stateDir string, apiPort int, img images) error {
	nodes, err := loadNodes(nodesFile)
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// Scale tests move thousands of pods through their phases.
	cfg.QPS, cfg.Burst = 1000, 2000
	cfg.UserAgent = "toucan-node-agent/" + version.Get().GitVersion
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ips, err := newIPPool()
	if err != nil {
		return err
	}
	defer ips.close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	a, err := newAgent(ctx, client, nodes, stateDir, ips, apiPort, img)
	if err != nil {
		return err
	}
	port, err := a.serveLogs()
	if err != nil {
		return fmt.Errorf("serving logs: %w", err)
	}
	for _, n := range nodes {
		// Right after start the API server may still be creating kube-node-lease.
		var err error
		for deadline := time.Now().Add(registerTimeout); ; {
			if err = a.registerNode(ctx, n, port); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("registering node %s: %w", n.Name, err)
		}
	}
	go a.heartbeat(ctx)
	// Before the pods: a pod's hosts file names the services of its namespace from its start.
	if err := a.watchServices(ctx); err != nil {
		return err
	}
	if err := a.watchPods(ctx); err != nil {
		return err
	}
	log.Printf("running %d nodes, pod IPs %s, logs on port %d", len(nodes), ips.describe(), port)

	<-ctx.Done()
	log.Print("stopping every pod")
	a.shutdown(shutdownTimeout)
	return nil
}
