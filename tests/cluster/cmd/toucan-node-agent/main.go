// Command toucan-node-agent stands in for the kubelet of a test cluster. It registers the nodes of
// a nodes file and runs the pods the scheduler binds to them, each node in one of two modes:
//
//   - process: every container really runs, as a process on this machine (the image is recorded,
//     not pulled, as in toucan's local runtime), init containers first, with the pod's command,
//     args, environment (downward API included), working directory and volumes at their mount
//     paths in a private mount namespace, a loopback address of its own as the pod IP, probes,
//     restarts, real exit codes, termination messages and logs served to `kubectl logs`.
//   - scripted: no process; each pod moves through its phases as its annotations say (see
//     scripted.go), for failure injection and for scale tests with thousands of pods.
//
// Data flows one way: a pod informer (pods bound to any node) -> one podWorker per pod, which owns
// that pod's containers and is the only writer of its status -> status patches. Deleting a pod
// stops its processes and then confirms the deletion, as a kubelet does, so that controllers and
// the garbage collector see it go.
//
// `toucan-node-agent container-init SPEC` is the agent's own helper: it runs inside a container's
// new mount namespace, binds the volumes and execs the container's command.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
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
	if len(os.Args) > 1 && os.Args[1] == containerInitCommand {
		os.Exit(containerInit(os.Args[2:]))
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix("toucan-node-agent: ")

	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the agent's user (required)")
	nodesFile := flag.String("nodes", "", "the nodes to register (YAML, required)")
	stateDir := flag.String("state-dir", "", "where pods' volumes and logs live (required)")
	apiPort := flag.Int("apiserver-port", 0, "the API server's port on 127.0.0.1, for pods' KUBERNETES_SERVICE_PORT (required)")
	flag.Parse()
	if *kubeconfig == "" || *nodesFile == "" || *stateDir == "" || *apiPort == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*kubeconfig, *nodesFile, *stateDir, *apiPort); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}

func run(kubeconfig, nodesFile, stateDir string, apiPort int) error {
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

	a, err := newAgent(ctx, client, nodes, stateDir, ips, apiPort)
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
	if err := a.watchPods(ctx); err != nil {
		return err
	}
	log.Printf("running %d nodes, pod IPs %s, logs on port %d", len(nodes), ips.describe(), port)

	<-ctx.Done()
	log.Print("stopping every pod")
	a.shutdown(shutdownTimeout)
	return nil
}
