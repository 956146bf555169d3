package main

// Running a pod's containers, in either mode: init containers in turn, then the main ones, with
// their restart policies and back-off, and the waiting reasons of a container that cannot start
// yet. One start of one container is an instance (instance.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// runContainers runs the pod's init containers in turn, then its main ones, until they are done
// or ctx ends.
func (w *podWorker) runContainers(ctx context.Context) {
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
// store, InvalidImageName when its reference is none, else with CreateContainerError.
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
		var invalidImage invalidImageError
		switch {
		case errors.As(err, &invalidImage):
			setWaiting("InvalidImageName", err.Error())
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
