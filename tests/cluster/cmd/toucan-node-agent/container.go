package main

// Container mode: each container runs in its image with runc. An instance is an OCI bundle in
// its folder (config.json from bundle.go, an overlayfs root of the cached image and an upper
// folder of its own), run by the container-run helper: in a mount namespace of its own it mounts
// that root, then becomes `runc run --keep`, whose output is the container's log and whose exit
// status is the container's. The overlay mount lives only in that namespace, so nothing stays
// mounted when an instance ends, whatever way it ends. --keep leaves the stopped container's
// cgroup until the agent has read its OOM kill count; `runc delete` then removes both.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/fsnotify/fsnotify"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

const (
	containerRunCommand = "container-run"
	// Every container's cgroup is under this one, in each hierarchy.
	cgroupParent = "/toucan-agent"
	// An unpacked image no container used for this long leaves the cache when an agent starts.
	imageCacheUnusedFor = 24 * time.Hour
	maxHostname         = 63
)

// runcRuntime is what container mode shares between pods.
type runcRuntime struct {
	runc  string
	store imageStore
	cache imageCache
	// Every container ID of this agent starts with it: the state folder's hash, so that an
	// agent started again in that folder finds what an earlier one left.
	prefix string
	// Why containers cannot run here (no runc, not root): they wait, saying so, and the rest of
	// the cluster works.
	unavailable error
}

func newRuncRuntime(stateDir string, store imageStore, cacheDir string) *runcRuntime {
	sum := sha256.Sum256([]byte(stateDir))
	r := &runcRuntime{store: store, cache: imageCache{dir: cacheDir}, prefix: fmt.Sprintf("toucan-%x-", sum[:4])}
	var err error
	if r.runc, err = exec.LookPath("runc"); err != nil {
		r.unavailable = fmt.Errorf("container mode needs runc: %w", err)
		return r
	}
	if os.Geteuid() != 0 {
		r.unavailable = errors.New("container mode needs the node agent to run as root (runc, overlayfs)")
		return r
	}
	r.cleanLeftovers()
	r.cache.prune(imageCacheUnusedFor)
	return r
}

// containerName is runc's ID for one instance of a pod's container.
func (r *runcRuntime) containerName(pod types.UID, container string, instance int32) string {
	return fmt.Sprintf("%s%s-%s-%d", r.prefix, pod, container, instance)
}

// cleanLeftovers deletes the containers an earlier agent of this state folder left behind (it
// was killed before it could stop them).
func (r *runcRuntime) cleanLeftovers() {
	out, err := exec.Command(r.runc, "list", "--format", "json").Output()
	if err != nil {
		log.Printf("listing runc's containers: %v", err)
		return
	}
	var containers []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &containers); err != nil {
		log.Printf("reading runc's list of containers: %v", err)
		return
	}
	for _, c := range containers {
		if strings.HasPrefix(c.ID, r.prefix) {
			if out, err := exec.Command(r.runc, "delete", "--force", c.ID).CombinedOutput(); err != nil {
				log.Printf("deleting container %s left by an earlier agent: %v: %s", c.ID, err, out)
			} else {
				log.Printf("deleted container %s left by an earlier agent", c.ID)
			}
		}
	}
}

// runSpec is what the agent hands the container-run helper, as a JSON file.
type runSpec struct {
	Lower  string `json:"lower"`
	Upper  string `json:"upper"`
	Work   string `json:"work"`
	Rootfs string `json:"rootfs"`
	// Argv is runc's command line.
	Argv []string `json:"argv"`
	// The helper writes why the container could not start here, for the container's status.
	StartErrorPath string `json:"startErrorPath"`
}

// prepareContainer finds the container's image (a pullError when the store lacks it), writes its
// bundle and returns the helper's command.
func (w *podWorker) prepareContainer(ctx context.Context, pod *corev1.Pod, c *containerState, dir, termLog string, volumes map[string]string, number int32) (_ *exec.Cmd, _ instanceRunner, err error) {
	r := w.a.runc
	if r.unavailable != nil {
		return nil, nil, r.unavailable
	}
	img, err := r.store.find(c.spec.Image)
	if err != nil {
		return nil, nil, err
	}
	manifest, config, err := img.read()
	if err != nil {
		return nil, nil, pullError{err}
	}
	w.mu.Lock()
	c.imageID = img.ref.name + "@" + img.manifest.Digest.String()
	w.mu.Unlock()
	lower, lease, err := r.cache.acquire(img, manifest)
	if err != nil {
		return nil, nil, pullError{err}
	}
	defer func() {
		if err != nil {
			lease.Close()
		}
	}()

	id := r.containerName(w.uid, c.spec.Name, number)
	inst := &runcInstance{
		runc:        r.runc,
		id:          id,
		bundle:      filepath.Join(dir, "bundle"),
		cgroupsPath: cgroupParent + "/" + id,
		runDir:      filepath.Join(dir, "runc"),
		pidFile:     filepath.Join(dir, "runc", "pid"),
		runcLog:     filepath.Join(dir, "runc", "log"),
		errPath:     filepath.Join(dir, "start-error"),
		lease:       lease,
	}
	spec, err := w.containerSpec(ctx, pod, c, dir, termLog, volumes, config.Config, lower, inst.cgroupsPath)
	if err != nil {
		return nil, nil, err
	}
	runPath, err := inst.writeBundle(spec, lower)
	if err != nil {
		return nil, nil, err
	}
	log.Printf("pod %s: container %s: image %s from %s", w.key(), c.spec.Name, img.ref, img.layout)
	return exec.Command(w.a.self, containerRunCommand, runPath), inst, nil
}

// containerSpec builds the container's runtime config from its pod and image.
func (w *podWorker) containerSpec(ctx context.Context, pod *corev1.Pod, c *containerState, dir, termLog string, volumes map[string]string, image ocispec.ImageConfig, rootfs, cgroupsPath string) (*specs.Spec, error) {
	env, _, err := w.containerEnv(w.newObjectCache(ctx), pod, &c.spec, nil)
	if err != nil {
		return nil, err
	}
	mounts, err := containerMounts(&c.spec, volumes, env, termLog)
	if err != nil {
		return nil, err
	}
	hostname := podHostname(pod)
	files, err := writeRuntimeFiles(dir, hostname, w.hostsPath())
	if err != nil {
		return nil, err
	}
	return containerConfig(bundleSpec{
		pod:         pod,
		container:   &c.spec,
		image:       image,
		users:       readUserDB(rootfs),
		env:         env,
		mounts:      mounts,
		files:       files,
		hostname:    hostname,
		cgroupsPath: cgroupsPath,
	})
}

// writeBundle writes the bundle (config.json, the root's mount point, the overlay's upper and
// work folders) and the helper's spec, and returns the latter's path.
func (r *runcInstance) writeBundle(spec *specs.Spec, lower string) (string, error) {
	run := runSpec{
		Lower:  lower,
		Upper:  filepath.Join(r.bundle, "upper"),
		Work:   filepath.Join(r.bundle, "work"),
		Rootfs: filepath.Join(r.bundle, "rootfs"),
		Argv: []string{r.runc, "--log", r.runcLog, "--log-format", "json",
			"run", "--keep", "--pid-file", r.pidFile, "--bundle", r.bundle, r.id},
		StartErrorPath: r.errPath,
	}
	for _, d := range []string{run.Rootfs, run.Upper, run.Work, r.runDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	config, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(r.bundle, "config.json"), config, 0o644); err != nil {
		return "", err
	}
	data, err := json.Marshal(run)
	if err != nil {
		return "", err
	}
	runPath := filepath.Join(filepath.Dir(r.bundle), "run.json")
	return runPath, os.WriteFile(runPath, data, 0o600)
}

// writeRuntimeFiles writes what a runtime binds over the image: /etc/hostname and a copy of this
// machine's /etc/resolv.conf (the pod shares its network); /etc/hosts is the pod's hosts file
// (hosts.go), kept current by the agent.
func writeRuntimeFiles(dir, hostname, hostsFile string) (map[string]string, error) {
	files := map[string]string{
		"/etc/hostname": hostname + "\n",
	}
	if resolv, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		files["/etc/resolv.conf"] = string(resolv)
	}
	sources := map[string]string{}
	for target, content := range files {
		source := filepath.Join(dir, filepath.Base(target))
		if err := os.WriteFile(source, []byte(content), 0o644); err != nil {
			return nil, err
		}
		sources[target] = source
	}
	sources[etcHosts] = hostsFile
	return sources, nil
}

// readUserDB reads the image's /etc/passwd and /etc/group; an image without them has none.
func readUserDB(rootfs string) userDB {
	read := func(name string) []byte {
		path, err := securejoin.SecureJoin(rootfs, name)
		if err != nil {
			return nil
		}
		data, _ := os.ReadFile(path)
		return data
	}
	return parseUserDB(read("/etc/passwd"), read("/etc/group"))
}

// runcInstance is one run of a container-mode container.
type runcInstance struct {
	runc        string
	id          string
	bundle      string
	cgroupsPath string
	runDir      string
	pidFile     string
	runcLog     string
	errPath     string
	// lease keeps the image in the cache while the container runs.
	lease *os.File
	// runPid is the helper's pid, then runc's: the leader of their process group.
	runPid int
}

// awaitStart returns once runc has started the container's process (it writes the pid file then)
// or has exited without; a pod deleted meanwhile stops runc.
func (r *runcInstance) awaitStart(ctx context.Context, cmd *exec.Cmd, exited <-chan struct{}) (int, bool) {
	r.runPid = cmd.Process.Pid
	var events chan fsnotify.Event
	var poll <-chan time.Time
	if watcher, err := fsnotify.NewWatcher(); err == nil && watcher.Add(r.runDir) == nil {
		defer watcher.Close()
		events = watcher.Events
	} else {
		if err == nil {
			watcher.Close()
		}
		ticker := time.NewTicker(20 * time.Millisecond)
		defer ticker.Stop()
		poll = ticker.C
	}
	for {
		if pid, ok := readPidFile(r.pidFile); ok {
			return pid, true
		}
		select {
		case <-exited:
			return readPidFile(r.pidFile)
		case <-ctx.Done():
			r.signal(syscall.SIGKILL)
			<-exited
			return 0, false
		case <-events:
		case <-poll:
		}
	}
}

func readPidFile(path string) (int, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid, err == nil && pid > 0
}

// signal sends sig to the container's first process; before it exists, to runc, which passes
// it on once it does.
func (r *runcInstance) signal(sig syscall.Signal) {
	if err := exec.Command(r.runc, "kill", r.id, strconv.Itoa(int(sig))).Run(); err != nil && r.runPid > 0 {
		_ = syscall.Kill(-r.runPid, sig)
	}
}

// probe runs an exec probe's command in the container, with its environment and user.
func (r *runcInstance) probe(ctx context.Context, command []string) *exec.Cmd {
	return exec.CommandContext(ctx, r.runc, append([]string{"exec", r.id}, command...)...)
}

// result: the exit code runc passed on, OOMKilled when the memory cgroup killed a process of
// the container, or StartError (128, as containerd reports it) when the container never started.
func (r *runcInstance) result(state *os.ProcessState) (int32, string, string) {
	if data, err := os.ReadFile(r.errPath); err == nil {
		return startErrorExitCode, "StartError", string(data)
	}
	if _, ok := readPidFile(r.pidFile); !ok {
		return startErrorExitCode, "StartError", runcError(r.runcLog, state)
	}
	code, reason := exitStatus(state)
	if kills, err := oomKills(r.cgroupsPath); err != nil {
		log.Printf("container %s: reading its OOM kills: %v", r.id, err)
	} else if kills > 0 {
		reason = "OOMKilled"
	}
	return code, reason, ""
}

// release deletes the stopped container (its runc state and cgroups) and its bundle; the log
// and termination message stay with the pod.
func (r *runcInstance) release() {
	if out, err := exec.Command(r.runc, "delete", "--force", r.id).CombinedOutput(); err != nil && !bytes.Contains(out, []byte("does not exist")) {
		log.Printf("deleting container %s: %v: %s", r.id, err, bytes.TrimSpace(out))
	}
	if err := os.RemoveAll(r.bundle); err != nil {
		log.Printf("removing the bundle of container %s: %v", r.id, err)
	}
	r.lease.Close()
}

// runcError is runc's last error from its log, which says why the container did not start.
func runcError(logPath string, state *os.ProcessState) string {
	message := fmt.Sprintf("runc exited (%s) before the container started", state)
	data, err := os.ReadFile(logPath)
	if err != nil {
		return message
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		var entry struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(s.Bytes(), &entry) == nil && entry.Level == "error" && entry.Msg != "" {
			message = entry.Msg
		}
	}
	return message
}

// oomKills reads how many processes the memory cgroup's OOM killer killed in a container's
// cgroup: memory.oom_control in cgroup v1, memory.events in v2.
func oomKills(cgroupsPath string) (int, error) {
	files := []string{
		filepath.Join("/sys/fs/cgroup/memory", cgroupsPath, "memory.oom_control"),
		filepath.Join("/sys/fs/cgroup", cgroupsPath, "memory.events"),
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return parseOOMKills(data)
	}
	return 0, fmt.Errorf("no memory cgroup at %s", cgroupsPath)
}

func parseOOMKills(data []byte) (int, error) {
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		if value, ok := strings.CutPrefix(s.Text(), "oom_kill "); ok {
			return strconv.Atoi(strings.TrimSpace(value))
		}
	}
	return 0, errors.New("no oom_kill count")
}

// containerRun is the container-run helper: in the mount namespace the agent made for it, it
// mounts the container's root and becomes runc.
func containerRun(args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "usage: toucan-node-agent %s SPEC.json\n", containerRunCommand)
		return 2
	}
	var spec runSpec
	data, err := os.ReadFile(args[0])
	if err == nil {
		err = json.Unmarshal(data, &spec)
	}
	if err == nil {
		err = mountAndRun(spec)
	}
	// Only reached when runc could not be started.
	message := fmt.Sprintf("container-run: %v", err)
	if spec.StartErrorPath != "" {
		_ = os.WriteFile(spec.StartErrorPath, []byte(message), 0o644)
	}
	fmt.Fprintln(os.Stderr, message)
	return startErrorExitCode
}

func mountAndRun(spec runSpec) error {
	for _, p := range []string{spec.Lower, spec.Upper, spec.Work} {
		// overlayfs reads its options as a comma-separated list of key=value, lowerdir's
		// folders separated by colons.
		if strings.ContainsAny(p, ",=:") {
			return fmt.Errorf("path %q has a comma, colon or equals sign, which overlayfs options cannot hold", p)
		}
	}
	options := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", spec.Lower, spec.Upper, spec.Work)
	if err := syscall.Mount("overlay", spec.Rootfs, "overlay", 0, options); err != nil {
		return fmt.Errorf("mounting the container's root (overlayfs %s): %w", options, err)
	}
	if len(spec.Argv) == 0 {
		return errors.New("no runc command line")
	}
	return syscall.Exec(spec.Argv[0], spec.Argv, os.Environ())
}
