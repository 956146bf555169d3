package main

// Scripted mode: no process runs; the pod's annotations say what its containers do.
//
//	cluster.toucan.dev/pending-seconds      time in ContainerCreating before the containers start (0)
//	cluster.toucan.dev/run-seconds          how long each run lasts; absent: until the pod is deleted
//	cluster.toucan.dev/exit-code            the containers' exit code when a run ends (0)
//	cluster.toucan.dev/termination-reason   the terminated reason (Completed for 0, else Error),
//	                                        e.g. OOMKilled
//	cluster.toucan.dev/termination-message  the terminated message
//	cluster.toucan.dev/ready                "false": never Ready (a readiness probe that never passes)
//	cluster.toucan.dev/ready-after-seconds  Ready this long after each start (0)
//	cluster.toucan.dev/waiting-reason       the containers never start and wait with this reason,
//	                                        e.g. ImagePullBackOff
//
// A run that ends restarts as restartPolicy says, with the back-off of process mode, so
// exit-code 1 with restartPolicy Always is a crash loop. Init containers complete at once.

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const scriptPrefix = "cluster.toucan.dev/"

type script struct {
	pending       time.Duration
	run           time.Duration // < 0: forever
	exitCode      int32
	reason        string
	message       string
	neverReady    bool
	readyAfter    time.Duration
	waitingReason string
}

func parseScript(annotations map[string]string) (script, error) {
	s := script{run: -1}
	duration := func(key string, into *time.Duration) error {
		v, ok := annotations[scriptPrefix+key]
		if !ok {
			return nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return fmt.Errorf("annotation %s%s: want a number of seconds, got %q", scriptPrefix, key, v)
		}
		*into = time.Duration(f * float64(time.Second))
		return nil
	}
	for key, into := range map[string]*time.Duration{"pending-seconds": &s.pending, "run-seconds": &s.run, "ready-after-seconds": &s.readyAfter} {
		if err := duration(key, into); err != nil {
			return s, err
		}
	}
	if v, ok := annotations[scriptPrefix+"exit-code"]; ok {
		code, err := strconv.ParseInt(v, 10, 32)
		if err != nil || code < 0 || code > 255 {
			return s, fmt.Errorf("annotation %sexit-code: want 0..255, got %q", scriptPrefix, v)
		}
		s.exitCode = int32(code)
	}
	s.reason = annotations[scriptPrefix+"termination-reason"]
	if s.reason == "" {
		s.reason = "Completed"
		if s.exitCode != 0 {
			s.reason = "Error"
		}
	}
	s.message = annotations[scriptPrefix+"termination-message"]
	switch v := annotations[scriptPrefix+"ready"]; v {
	case "", "true":
	case "false":
		s.neverReady = true
	default:
		return s, fmt.Errorf("annotation %sready: want true or false, got %q", scriptPrefix, v)
	}
	s.waitingReason = annotations[scriptPrefix+"waiting-reason"]
	return s, nil
}

func (w *podWorker) runScripted(ctx context.Context) {
	s, err := parseScript(w.latest().Annotations)
	if err == nil && s.waitingReason == "" {
		err = sleep(ctx, s.pending)
		if err != nil {
			return
		}
	}
	if err != nil || s.waitingReason != "" {
		reason, message := s.waitingReason, "scripted by the pod's annotations"
		if err != nil {
			reason, message = "CreateContainerConfigError", err.Error()
		}
		w.update(func() {
			for _, c := range w.allContainers() {
				c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
			}
		})
		<-ctx.Done()
		return
	}

	w.update(func() {
		now := metav1.Now()
		for _, c := range w.init {
			c.started = false
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason: "Completed", StartedAt: now, FinishedAt: now, ContainerID: w.containerID(c),
			}}
		}
		w.initDone = true
	})
	backoff := restartBackoffFirst
	for {
		startedAt := metav1.Now()
		w.update(func() {
			for _, c := range w.main {
				c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
				c.started = true
				c.ready = !s.neverReady && s.readyAfter == 0
			}
		})
		if !s.neverReady && s.readyAfter > 0 {
			go func() {
				if sleep(ctx, s.readyAfter) == nil {
					w.update(func() {
						for _, c := range w.main {
							c.ready = c.state.Running != nil && c.state.Running.StartedAt.Equal(&startedAt)
						}
					})
				}
			}()
		}
		if s.run < 0 {
			<-ctx.Done()
			return
		}
		if sleep(ctx, s.run) != nil {
			return
		}
		w.update(func() {
			for _, c := range w.main {
				c.ready = false
				c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: s.exitCode, Reason: s.reason, Message: s.message,
					StartedAt: startedAt, FinishedAt: metav1.Now(), ContainerID: w.containerID(c),
				}}
			}
		})
		policy := w.latest().Spec.RestartPolicy
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && s.exitCode == 0) {
			return
		}
		w.update(func() {
			for _, c := range w.main {
				c.lastState = c.state
				c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason:  "CrashLoopBackOff",
					Message: fmt.Sprintf("back-off %s restarting failed container %s in pod %s", backoff, c.spec.Name, w.key()),
				}}
			}
		})
		if sleep(ctx, backoff) != nil {
			return
		}
		backoff = min(2*backoff, restartBackoffMax)
		w.update(func() {
			for _, c := range w.main {
				c.restarts++
			}
		})
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
