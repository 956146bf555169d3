package main

// Running a pod's containers, in either mode: init containers in turn, then the main ones, each
// instance prepared, started, probed, stopped and read back the same way. What differs between
// a process (process mode) and a runc container (container mode) is an instanceRunner.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// Restart back-off: shorter than the kubelet's 10 s to 5 min, tests wait on it.
	restartBackoffFirst = time.Second
	restartBackoffMax   = 30 * time.Second
	configRetryInterval = time.Second
	// An image missing from the store: ErrImagePull this long, then ImagePullBackOff while the
	// agent waits to look again, 1 s doubling to 10 s (the kubelet's 10 s to 5 min is longer
	// than a test waits for an image it has just added).
	pullErrorShown   = time.Second
	pullBackoffFirst = time.Second
	pullBackoffMax   = 10 * time.Second
	// FallbackToLogsOnError takes at most this much of the log's end.
	fallbackLogLines = 80
	fallbackLogBytes = 2048
)

func (w *podWorker) runProcesses(ctx context.Context) {
	volumes, ok := w.retryConfig(ctx, w.allContainers(), func() (map[string]string, error) {
		return w.prepareVolumes(ctx, w.latest())
	})
	if !ok {
		return
	}
	for i := range w.init {
		if !w.runInitContainer(ctx, w.init[i], volumes, i) {
			return
		}
	}
	w.update(func() {
		w.initDone = true
		for _, c := range w.main {
			c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
		}
	})
	var wg sync.WaitGroup
	for _, c := range w.main {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runMainContainer(ctx, c, volumes)
		}()
	}
	wg.Wait()
}

func (w *podWorker) allContainers() []*containerState {
	return append(append([]*containerState{}, w.init...), w.main...)
}

// retryConfigValue calls f until it succeeds. While it fails the containers wait, as the
// kubelet's do: with CreateContainerConfigError for an error in the pod's configuration, with
// ErrImagePull and then ImagePullBackOff (and a growing back-off) when the image is not in the
// store, else with CreateContainerError.
func retryConfigValue[T any](w *podWorker, ctx context.Context, waiting []*containerState, f func() (T, error)) (T, bool) {
	var zero T
	setWaiting := func(reason, message string) {
		w.update(func() {
			for _, c := range waiting {
				if c.state.Running == nil {
					c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
				}
			}
		})
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	pullBackoff := pullBackoffFirst
	for {
		v, err := f()
		if err == nil {
			return v, true
		}
		var cfgErr configError
		var pullErr pullError
		switch {
		case errors.As(err, &pullErr):
			setWaiting("ErrImagePull", err.Error())
			if !sleep(pullErrorShown) {
				return zero, false
			}
			setWaiting("ImagePullBackOff", "Back-off pulling image: "+err.Error())
			if !sleep(pullBackoff) {
				return zero, false
			}
			pullBackoff = min(2*pullBackoff, pullBackoffMax)
			continue
		case errors.As(err, &cfgErr):
			setWaiting("CreateContainerConfigError", err.Error())
		default:
			setWaiting("CreateContainerError", err.Error())
		}
		if !sleep(configRetryInterval) {
			return zero, false
		}
	}
}

func (w *podWorker) retryConfig(ctx context.Context, waiting []*containerState, f func() (map[string]string, error)) (map[string]string, bool) {
	return retryConfigValue(w, ctx, waiting, f)
}

// runInitContainer runs one init container until it succeeds; false when the pod fails or stops.
func (w *podWorker) runInitContainer(ctx context.Context, c *containerState, volumes map[string]string, index int) bool {
	backoff := restartBackoffFirst
	for {
		code, ok := w.runInstance(ctx, c, volumes)
		if !ok {
			return false
		}
		if code == 0 {
			if index+1 < len(w.init) {
				w.update(func() {
					w.init[index+1].state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
				})
			}
			return true
		}
		if w.latest().Spec.RestartPolicy == corev1.RestartPolicyNever {
			w.update(func() { w.initFailed = true })
			return false
		}
		if !w.backOff(ctx, c, &backoff) {
			return false
		}
	}
}

func (w *podWorker) runMainContainer(ctx context.Context, c *containerState, volumes map[string]string) {
	backoff := restartBackoffFirst
	for {
		started := time.Now()
		code, ok := w.runInstance(ctx, c, volumes)
		if !ok {
			return
		}
		policy := w.latest().Spec.RestartPolicy
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && code == 0) {
			return
		}
		// A container that ran a good while starts its back-off afresh.
		if time.Since(started) > 10*restartBackoffMax {
			backoff = restartBackoffFirst
		}
		if !w.backOff(ctx, c, &backoff) {
			return
		}
	}
}

// backOff waits before a restart, with the container in CrashLoopBackOff, and counts the restart.
func (w *podWorker) backOff(ctx context.Context, c *containerState, backoff *time.Duration) bool {
	wait := *backoff
	*backoff = min(2**backoff, restartBackoffMax)
	w.update(func() {
		c.lastState = c.state
		c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason:  "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container %s in pod %s", wait, c.spec.Name, w.key()),
		}}
	})
	select {
	case <-ctx.Done():
		return false
	case <-time.After(wait):
	}
	// The count goes up when the new instance starts, as the kubelet counts it.
	w.update(func() { c.restartPending = true })
	return true
}

// instance is one start of a container, in either mode.
type instance struct {
	cmd     *exec.Cmd
	logFile *os.File
	logPath string
	termLog string
	run     instanceRunner
}

// instanceRunner is what differs between process and container mode once an instance is
// prepared: how its start is known, how it is signalled and probed, how its end reads.
type instanceRunner interface {
	// awaitStart returns the pid of the container's first process, the leader of its process
	// group, once it runs; false when the command exited before it did.
	awaitStart(cmd *exec.Cmd, exited <-chan struct{}) (int, bool)
	signal(sig syscall.Signal)
	// probe returns the command that runs an exec probe inside the container.
	probe(ctx context.Context, command []string) *exec.Cmd
	// result reads the instance's end from its command's: exit code, reason, and a message
	// that replaces the termination message when not empty.
	result(state *os.ProcessState) (int32, string, string)
	// release frees what the instance holds once it has ended.
	release()
}

// runInstance starts the container once and waits for it to exit; ok is false when it was
// stopped because the pod is being deleted or the agent stops.
func (w *podWorker) runInstance(ctx context.Context, c *containerState, volumes map[string]string) (exitCode int32, ok bool) {
	var number int32
	inst, ok := retryConfigValue(w, ctx, []*containerState{c}, func() (*instance, error) {
		w.mu.Lock()
		number = c.restarts
		if c.restartPending {
			number++
		}
		w.mu.Unlock()
		return w.prepareInstance(ctx, c, volumes, number)
	})
	if !ok {
		return 0, false
	}
	defer inst.logFile.Close()
	defer inst.run.release()

	if err := inst.cmd.Start(); err != nil {
		now := metav1.Now()
		w.update(func() {
			c.restarts, c.restartPending = number, false
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: startErrorExitCode, Reason: "StartError", Message: err.Error(),
				StartedAt: now, FinishedAt: now,
			}}
		})
		return startErrorExitCode, true
	}
	exited := make(chan struct{})
	go func() {
		_ = inst.cmd.Wait()
		close(exited)
	}()

	startedAt := metav1.Now()
	killedFor := ""
	if pid, running := inst.run.awaitStart(inst.cmd, exited); running {
		startedAt = metav1.Now()
		killedFor = w.watchRunning(ctx, c, inst, pid, number, startedAt, exited)
	}
	<-exited

	exitCode, reason, message := inst.run.result(inst.cmd.ProcessState)
	if message == "" {
		message = readTerminationMessage(inst.termLog)
		if message == "" && exitCode != 0 && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
			message = logTail(inst.logPath)
		}
	}
	w.update(func() {
		c.restarts, c.restartPending = number, false
		c.pid = 0
		c.ready = false
		c.logPath = inst.logPath
		c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode:    exitCode,
			Reason:      reason,
			Message:     message,
			StartedAt:   startedAt,
			FinishedAt:  metav1.Now(),
			ContainerID: w.containerID(c),
		}}
	})
	if killedFor == "deleted" {
		return exitCode, false
	}
	return exitCode, true
}

// watchRunning reports the instance running and runs its probes until it exits, or stops it
// when the pod is deleted or its liveness probe fails; it says which.
func (w *podWorker) watchRunning(ctx context.Context, c *containerState, inst *instance, pid int, number int32, startedAt metav1.Time, exited <-chan struct{}) string {
	// tests/cluster/down kills what is listed here should the agent die first.
	pgidFile := filepath.Join(pgidsDir(w.a.stateDir), strconv.Itoa(pid))
	_ = os.WriteFile(pgidFile, nil, 0o644)
	defer os.Remove(pgidFile)

	hasReadiness := c.spec.ReadinessProbe != nil
	hasStartup := c.spec.StartupProbe != nil
	w.update(func() {
		c.restarts, c.restartPending = number, false
		c.pid = pid
		c.logPath = inst.logPath
		c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
		c.started = !hasStartup
		c.ready = !hasReadiness && !hasStartup
	})

	// Probes live as long as this instance. A failed liveness probe restarts it.
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	livenessFailed := make(chan string, 1)
	go w.runProbes(probeCtx, c, inst.run, livenessFailed)

	select {
	case <-exited:
		return ""
	case <-ctx.Done():
		w.stop(inst.run, exited)
		return "deleted"
	case msg := <-livenessFailed:
		log.Printf("pod %s: container %s failed its liveness probe: %s", w.key(), c.spec.Name, msg)
		w.stop(inst.run, exited)
		return "liveness"
	}
}

// prepareInstance makes the folder, log and command of one instance; the node's mode makes the
// rest.
func (w *podWorker) prepareInstance(ctx context.Context, c *containerState, volumes map[string]string, number int32) (*instance, error) {
	pod := w.latest()
	dir := filepath.Join(w.dir, "containers", c.spec.Name, strconv.Itoa(int(number)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	termLog := filepath.Join(dir, "termination-log")
	if err := os.WriteFile(termLog, nil, 0o666); err != nil {
		return nil, err
	}
	// Whatever user the container runs as may write its termination message.
	_ = os.Chmod(termLog, 0o666)
	var cmd *exec.Cmd
	var run instanceRunner
	var err error
	if w.node.Mode == modeContainer {
		cmd, run, err = w.prepareContainer(ctx, pod, c, dir, termLog, volumes, number)
	} else {
		cmd, run, err = w.prepareProcess(ctx, pod, c, dir, termLog, volumes)
	}
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		run.release()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if w.a.isRoot {
		// A mount namespace of its own: where the helper binds volumes or mounts the root.
		attr.Unshareflags = syscall.CLONE_NEWNS
	}
	cmd.SysProcAttr = attr
	return &instance{cmd: cmd, logFile: logFile, logPath: logPath, termLog: termLog, run: run}, nil
}

// prepareProcess writes the container-init helper's spec and returns its command.
func (w *podWorker) prepareProcess(ctx context.Context, pod *corev1.Pod, c *containerState, dir, termLog string, volumes map[string]string) (*exec.Cmd, instanceRunner, error) {
	envMap, env, err := w.containerEnv(w.newObjectCache(ctx), pod, &c.spec, os.Environ())
	if err != nil {
		return nil, nil, err
	}
	argv, err := commandLine(&c.spec, envMap)
	if err != nil {
		return nil, nil, err
	}
	mounts, err := containerMounts(&c.spec, volumes, envMap, termLog)
	if err != nil {
		return nil, nil, err
	}
	spec := initSpec{
		Argv:           argv,
		WorkingDir:     c.spec.WorkingDir,
		Mounts:         mounts,
		Namespaced:     w.a.isRoot,
		StartErrorPath: filepath.Join(dir, "start-error"),
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, err
	}
	specPath := filepath.Join(dir, "init.json")
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(w.a.self, containerInitCommand, specPath)
	cmd.Env = env
	return cmd, &processInstance{env: env, workDir: c.spec.WorkingDir, errPath: spec.StartErrorPath, nsenter: w.a.isRoot}, nil
}

// processInstance is one run of a process-mode container: the helper's process, which execs
// the command and so is the container's process and the leader of its process group.
type processInstance struct {
	pid     int
	env     []string
	workDir string
	errPath string
	// nsenter: exec probes enter the container's mount namespace (the agent is root).
	nsenter bool
}

func (p *processInstance) awaitStart(cmd *exec.Cmd, _ <-chan struct{}) (int, bool) {
	p.pid = cmd.Process.Pid
	return p.pid, true
}

func (p *processInstance) signal(sig syscall.Signal) { _ = syscall.Kill(-p.pid, sig) }

func (p *processInstance) probe(ctx context.Context, command []string) *exec.Cmd {
	var cmd *exec.Cmd
	if nsenter, err := exec.LookPath("nsenter"); err == nil && p.nsenter {
		args := []string{"--target", strconv.Itoa(p.pid), "--mount", "--wd", "--"}
		cmd = exec.CommandContext(ctx, nsenter, append(args, command...)...)
	} else {
		cmd = exec.CommandContext(ctx, command[0], command[1:]...)
		cmd.Dir = p.workDir
	}
	cmd.Env = p.env
	return cmd
}

func (p *processInstance) result(state *os.ProcessState) (int32, string, string) {
	if data, err := os.ReadFile(p.errPath); err == nil {
		return startErrorExitCode, "StartError", string(data)
	}
	code, reason := exitStatus(state)
	return code, reason, ""
}

// release kills whatever the container left in its process group.
func (p *processInstance) release() {
	if p.pid > 0 {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}

// stop stops a container: SIGTERM, then SIGKILL after the grace period.
func (w *podWorker) stop(run instanceRunner, exited <-chan struct{}) {
	run.signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(w.gracePeriod()):
		run.signal(syscall.SIGKILL)
		<-exited
	}
}

// exitStatus gives the exit code as a container runtime reports it: 128+N for signal N.
func exitStatus(state *os.ProcessState) (int32, string) {
	if state == nil {
		return startErrorExitCode, "StartError"
	}
	code := int32(state.ExitCode())
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int32(ws.Signal())
	}
	if code == 0 {
		return 0, "Completed"
	}
	return code, "Error"
}

func readTerminationMessage(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(data) > maxTerminationMessage {
		data = data[:maxTerminationMessage]
	}
	return string(data)
}

func logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > fallbackLogLines {
		lines = lines[len(lines)-fallbackLogLines:]
	}
	tail := string(bytes.Join(lines, []byte("\n")))
	if len(tail) > fallbackLogBytes {
		tail = tail[len(tail)-fallbackLogBytes:]
	}
	return strings.TrimSpace(tail)
}
