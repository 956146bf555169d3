package main

// The pod status the worker reports, computed from its state as the kubelet computes it.

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// statusLocked builds the pod's status; the caller holds w.mu.
func (w *podWorker) statusLocked() corev1.PodStatus {
	pod := w.pod
	status := corev1.PodStatus{
		Phase:     w.phaseLocked(),
		HostIP:    nodeIP,
		HostIPs:   []corev1.HostIP{{IP: nodeIP}},
		StartTime: &w.startTime,
		QOSClass:  pod.Status.QOSClass,
	}
	if w.failReason != "" {
		status.Reason, status.Message = w.failReason, w.failMessage
	}
	if w.podIP != "" {
		status.PodIP = w.podIP
		status.PodIPs = []corev1.PodIP{{IP: w.podIP}}
	}
	for _, c := range w.init {
		status.InitContainerStatuses = append(status.InitContainerStatuses, w.containerStatusLocked(c))
	}
	allReady := len(w.main) > 0
	for _, c := range w.main {
		status.ContainerStatuses = append(status.ContainerStatuses, w.containerStatusLocked(c))
		allReady = allReady && c.ready
	}
	w.setConditionLocked(corev1.PodReadyToStartContainers, w.sandboxUp, "")
	w.setConditionLocked(corev1.PodInitialized, w.initDone, "ContainersNotInitialized")
	w.setConditionLocked(corev1.ContainersReady, allReady, "ContainersNotReady")
	w.setConditionLocked(corev1.PodReady, allReady, "ContainersNotReady")

	// Conditions others own (PodScheduled, DisruptionTarget, readiness gates) are kept as they are.
	for _, c := range pod.Status.Conditions {
		if _, ours := w.conditions[c.Type]; !ours {
			status.Conditions = append(status.Conditions, c)
		}
	}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		status.Conditions = append(status.Conditions, w.conditions[t])
	}
	return status
}

// setConditionLocked records a condition, moving its transition time only when it flips.
func (w *podWorker) setConditionLocked(t corev1.PodConditionType, ok bool, falseReason string) {
	s := corev1.ConditionFalse
	reason := falseReason
	if ok {
		s, reason = corev1.ConditionTrue, ""
	}
	if old, found := w.conditions[t]; found && old.Status == s {
		return
	}
	w.conditions[t] = corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: metav1.Now()}
}

func (w *podWorker) containerStatusLocked(c *containerState) corev1.ContainerStatus {
	started := c.started
	imageID := c.imageID
	if imageID == "" {
		imageID = "toucan-node-agent://" + c.spec.Image
	}
	s := corev1.ContainerStatus{
		Name:                 c.spec.Name,
		Image:                c.spec.Image,
		ImageID:              imageID,
		State:                c.state,
		LastTerminationState: c.lastState,
		Ready:                c.ready,
		RestartCount:         c.restarts,
		Started:              &started,
	}
	if c.state.Running != nil || c.state.Terminated != nil {
		s.ContainerID = w.containerID(c)
	}
	return s
}

// phaseLocked follows the kubelet's getPhase: Pending until every container has started once,
// Running while any runs or will restart, then Succeeded or Failed.
func (w *podWorker) phaseLocked() corev1.PodPhase {
	if w.initFailed || w.failReason != "" {
		return corev1.PodFailed
	}
	if !w.initDone {
		return corev1.PodPending
	}
	var neverRan, running, restarting, succeeded, failed int
	for _, c := range w.main {
		switch {
		case c.state.Running != nil:
			running++
		case c.state.Terminated != nil && c.state.Terminated.ExitCode == 0:
			succeeded++
		case c.state.Terminated != nil:
			failed++
		case c.lastState.Terminated != nil:
			restarting++
		default:
			neverRan++
		}
	}
	policy := w.pod.Spec.RestartPolicy
	switch {
	case neverRan > 0:
		return corev1.PodPending
	case running > 0 || restarting > 0:
		return corev1.PodRunning
	case policy == corev1.RestartPolicyAlways:
		return corev1.PodRunning
	case failed == 0:
		return corev1.PodSucceeded
	case policy == corev1.RestartPolicyOnFailure:
		return corev1.PodRunning
	}
	return corev1.PodFailed
}
