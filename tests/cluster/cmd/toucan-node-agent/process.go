package main

// Process mode: the pod's containers run as processes on this machine.

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

// retryConfig calls f until it succeeds; while it fails with a configuration error the
// containers wait with reason CreateContainerConfigError, as the kubelet's do.
func retryConfigValue[T any](w *podWorker, ctx context.Context, waiting []*containerState, f func() (T, error)) (T, bool) {
	for {
		v, err := f()
		if err == nil {
			return v, true
		}
		var cfgErr configError
		reason := "CreateContainerError"
		if errors.As(err, &cfgErr) {
			reason = "CreateContainerConfigError"
		}
		w.update(func() {
			for _, c := range waiting {
				if c.state.Running == nil {
					c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: err.Error()}}
				}
			}
		})
		select {
		case <-ctx.Done():
			var zero T
			return zero, false
		case <-time.After(configRetryInterval):
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

// runInstance starts the container once and waits for it to exit; ok is false when it was
// stopped because the pod is being deleted or the agent stops.
func (w *podWorker) runInstance(ctx context.Context, c *containerState, volumes map[string]string) (exitCode int32, ok bool) {
	type prepared struct {
		cmd      *exec.Cmd
		env      []string
		workDir  string
		termLog  string
		errPath  string
		logFile  *os.File
		logPath  string
		specPath string
	}
	var instance int32
	p, ok := retryConfigValue(w, ctx, []*containerState{c}, func() (*prepared, error) {
		pod := w.latest()
		w.mu.Lock()
		instance = c.restarts
		if c.restartPending {
			instance++
		}
		w.mu.Unlock()
		envMap, env, err := w.containerEnv(w.newObjectCache(ctx), pod, &c.spec)
		if err != nil {
			return nil, err
		}
		argv, err := commandLine(&c.spec, envMap)
		if err != nil {
			return nil, err
		}
		dir := filepath.Join(w.dir, "containers", c.spec.Name, strconv.Itoa(int(instance)))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		termLog := filepath.Join(dir, "termination-log")
		if err := os.WriteFile(termLog, nil, 0o666); err != nil {
			return nil, err
		}
		_ = os.Chmod(termLog, 0o666)
		mounts, err := containerMounts(&c.spec, volumes, envMap, termLog)
		if err != nil {
			return nil, err
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
			return nil, err
		}
		specPath := filepath.Join(dir, "init.json")
		if err := os.WriteFile(specPath, data, 0o600); err != nil {
			return nil, err
		}
		logPath := filepath.Join(dir, "log")
		logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(w.a.self, containerInitCommand, specPath)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = logFile, logFile
		attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if w.a.isRoot {
			attr.Unshareflags = syscall.CLONE_NEWNS
		}
		cmd.SysProcAttr = attr
		return &prepared{cmd: cmd, env: env, workDir: c.spec.WorkingDir, termLog: termLog, errPath: spec.StartErrorPath, logFile: logFile, logPath: logPath, specPath: specPath}, nil
	})
	if !ok {
		return 0, false
	}
	defer p.logFile.Close()

	startedAt := metav1.Now()
	if err := p.cmd.Start(); err != nil {
		w.update(func() {
			c.restarts, c.restartPending = instance, false
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: startErrorExitCode, Reason: "StartError", Message: err.Error(),
				StartedAt: startedAt, FinishedAt: metav1.Now(),
			}}
		})
		return startErrorExitCode, true
	}
	pid := p.cmd.Process.Pid
	pgidFile := filepath.Join(pgidsDir(w.a.stateDir), strconv.Itoa(pid))
	_ = os.WriteFile(pgidFile, nil, 0o644)
	defer os.Remove(pgidFile)

	hasReadiness := c.spec.ReadinessProbe != nil
	hasStartup := c.spec.StartupProbe != nil
	w.update(func() {
		c.restarts, c.restartPending = instance, false
		c.pid = pid
		c.logPath = p.logPath
		c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
		c.started = !hasStartup
		c.ready = !hasReadiness && !hasStartup
	})

	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = p.cmd.Wait()
		close(exited)
	}()

	// Probes live as long as this instance. A failed liveness probe restarts it.
	probeCtx, stopProbes := context.WithCancel(ctx)
	livenessFailed := make(chan string, 1)
	go w.runProbes(probeCtx, c, pid, p.env, livenessFailed)

	var killedFor string
	select {
	case <-exited:
	case <-ctx.Done():
		killedFor = "deleted"
		w.kill(pid, exited)
	case msg := <-livenessFailed:
		killedFor = "liveness"
		log.Printf("pod %s: container %s failed its liveness probe: %s", w.key(), c.spec.Name, msg)
		w.kill(pid, exited)
	}
	stopProbes()
	// Whatever the container left in its process group goes with it.
	_ = syscall.Kill(-pid, syscall.SIGKILL)

	exitCode, reason := exitStatus(p.cmd.ProcessState, waitErr)
	message := readTerminationMessage(p.termLog)
	if data, err := os.ReadFile(p.errPath); err == nil {
		exitCode, reason, message = startErrorExitCode, "StartError", string(data)
	} else if message == "" && exitCode != 0 && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		message = logTail(p.logPath)
	}
	w.update(func() {
		c.pid = 0
		c.ready = false
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

// kill stops a container's process group: SIGTERM, then SIGKILL after the grace period.
func (w *podWorker) kill(pid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(w.gracePeriod()):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	}
}

// exitStatus gives the exit code as a container runtime reports it: 128+N for signal N.
func exitStatus(state *os.ProcessState, waitErr error) (int32, string) {
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
