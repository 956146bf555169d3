package main

// One instance of a container: prepared, started, reported running, probed, stopped and read
// back the same way in process and container mode. What differs is an instanceRunner.

import (
	"context"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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
	// group, once it runs; false when the command exited before it did (killed if ctx ended).
	awaitStart(ctx context.Context, cmd *exec.Cmd, exited <-chan struct{}) (int, bool)
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
	if pid, running := inst.run.awaitStart(ctx, inst.cmd, exited); running {
		startedAt = metav1.Now()
		killedFor = w.watchRunning(ctx, c, inst, pid, number, startedAt, exited)
	} else if ctx.Err() != nil {
		killedFor = "deleted"
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
