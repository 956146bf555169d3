// Command toucan-cluster runs one throwaway Kubernetes control plane for tests, all of it on
// loopback and all of it under one folder:
//
//	etcd (embedded, in this process) -> kube-apiserver -> kube-controller-manager,
//	                                                   -> kube-scheduler,
//	                                                   -> toucan-node-agent (the kubelet stand-in)
//
// It makes the keys, tokens and kubeconfigs, starts each part as a child process once the one
// before it answers, writes DIR/ready when the cluster takes pods, and then watches. It stops
// everything, children first, on SIGTERM or SIGINT, when its folder's kubeconfig disappears, when
// the process named by --owner-pid exits, when --ttl has passed, or when any part exits on its
// own: a test cluster never outlives its test by long and never runs half-broken. The children
// get SIGKILL from the kernel should this process die without stopping them (PR_SET_PDEATHSIG).
//
// tests/cluster/up starts it and tests/cluster/down stops it; see tests/cluster/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	dir        string
	binDir     string
	nodesFile  string
	images     string // container mode's image store, colon-separated
	imageCache string // where container mode unpacks images
	ownerPID   int
	ttl        time.Duration
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix("toucan-cluster: ")

	var o options
	flag.StringVar(&o.dir, "dir", "", "the cluster's folder: keys, data, logs and DIR/kubeconfig (required)")
	flag.StringVar(&o.binDir, "bin", "", "folder with kube-apiserver, kube-controller-manager, kube-scheduler and toucan-node-agent (default: this binary's folder)")
	flag.StringVar(&o.nodesFile, "nodes", "", "the nodes the agent registers (YAML; default: nodes.yaml in the folder above --bin)")
	flag.StringVar(&o.images, "images", "", "the image store of container-mode nodes: OCI layouts, or folders of them, separated by colons (DIR/images, a folder of layouts, is always in it)")
	flag.StringVar(&o.imageCache, "image-cache", "", "where container-mode nodes unpack images, shared by clusters (default: in DIR)")
	flag.IntVar(&o.ownerPID, "owner-pid", 0, "stop when this process exits (0: no owner)")
	flag.DurationVar(&o.ttl, "ttl", 3*time.Hour, "stop after this long whatever happens (0: never)")
	flag.Parse()
	if o.dir == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := o.complete(); err != nil {
		log.Print(err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Printf("stopped: %v", err)
		_ = os.WriteFile(filepath.Join(o.dir, "failed"), []byte(err.Error()+"\n"), 0o644)
		os.Exit(1)
	}
	log.Print("stopped")
}

func (o *options) complete() error {
	var err error
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	if o.binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this binary's folder: %w", err)
		}
		o.binDir = filepath.Dir(exe)
	}
	if o.nodesFile == "" {
		o.nodesFile = filepath.Join(filepath.Dir(o.binDir), "nodes.yaml")
	}
	for _, name := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "toucan-node-agent"} {
		if _, err := os.Stat(filepath.Join(o.binDir, name)); err != nil {
			return fmt.Errorf("%s is not built (run tests/cluster/build): %w", name, err)
		}
	}
	if _, err := os.Stat(o.nodesFile); err != nil {
		return fmt.Errorf("the nodes file: %w", err)
	}
	return nil
}

// run starts the cluster, waits until something asks it to stop, and stops it.
func run(ctx context.Context, o options) error {
	started := time.Now()
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	for _, stale := range []string{"ready", "failed"} {
		_ = os.Remove(filepath.Join(o.dir, stale))
	}
	if err := os.WriteFile(filepath.Join(o.dir, "toucan-cluster.pid"), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(o.dir, "toucan-cluster.pid"))

	l, err := newLayout(o.dir)
	if err != nil {
		return err
	}
	tokens, err := writeSecrets(l)
	if err != nil {
		return fmt.Errorf("writing keys and tokens: %w", err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	apiPort, etcdClientPort, etcdPeerPort := ports[0], ports[1], ports[2]

	etcd, err := startEtcd(l.etcdData, etcdClientPort, etcdPeerPort)
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer etcd.stop()

	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	if err := writeKubeconfigs(l, server, tokens); err != nil {
		return fmt.Errorf("writing kubeconfigs: %w", err)
	}

	group := newProcessGroup(l.logs)
	defer group.stopAll()

	if err := group.start("kube-apiserver", filepath.Join(o.binDir, "kube-apiserver"), apiserverArgs(l, apiPort, etcd.clientURL)); err != nil {
		return err
	}
	if err := waitAPIServer(ctx, group, server, l.caCert, tokens.admin); err != nil {
		return err
	}
	log.Printf("kube-apiserver answers on %s after %s", server, time.Since(started).Round(time.Millisecond))

	if err := writeSchedulerConfig(l); err != nil {
		return err
	}
	if err := group.start("kube-controller-manager", filepath.Join(o.binDir, "kube-controller-manager"), controllerManagerArgs(l)); err != nil {
		return err
	}
	if err := group.start("kube-scheduler", filepath.Join(o.binDir, "kube-scheduler"), schedulerArgs(l)); err != nil {
		return err
	}
	if err := group.start("toucan-node-agent", filepath.Join(o.binDir, "toucan-node-agent"), agentArgs(l, o, apiPort)); err != nil {
		return err
	}

	nodes, err := nodeNames(o.nodesFile)
	if err != nil {
		return err
	}
	if err := waitClusterReady(ctx, group, l.adminKubeconfig, nodes); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(o.dir, "ready"), []byte(server+"\n")); err != nil {
		return err
	}
	log.Printf("cluster ready in %s: KUBECONFIG=%s", time.Since(started).Round(time.Millisecond), l.adminKubeconfig)

	return watch(ctx, o, group, etcd, l.adminKubeconfig)
}

// watch returns nil when asked to stop and an error when a part of the cluster failed.
func watch(ctx context.Context, o options, group *processGroup, etcd *embeddedEtcd, kubeconfig string) error {
	var deadline <-chan time.Time
	if o.ttl > 0 {
		deadline = time.After(o.ttl)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Print("signalled: stopping")
			return nil
		case <-deadline:
			log.Printf("the time to live (%s) has passed: stopping", o.ttl)
			return nil
		case exit := <-group.exited:
			return fmt.Errorf("%s exited on its own (%v); see %s", exit.name, exit.err, exit.logPath)
		case err := <-etcd.errors():
			return fmt.Errorf("etcd failed: %w", err)
		case <-tick.C:
			if _, err := os.Stat(kubeconfig); errors.Is(err, os.ErrNotExist) {
				log.Printf("%s is gone: stopping", kubeconfig)
				return nil
			}
			if o.ownerPID > 0 && !processAlive(o.ownerPID) {
				log.Printf("the owner process %d has exited: stopping", o.ownerPID)
				return nil
			}
		}
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
