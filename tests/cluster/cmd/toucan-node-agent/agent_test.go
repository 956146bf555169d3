package main

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestParseScript(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		want        script
		wantErr     string
	}{
		{
			name:        "no annotations: runs until deleted, Ready",
			annotations: nil,
			want:        script{run: -1, reason: "Completed"},
		},
		{
			name: "a failing run",
			annotations: map[string]string{
				"cluster.toucan.dev/run-seconds": "1.5",
				"cluster.toucan.dev/exit-code":   "2",
			},
			want: script{run: 1500 * time.Millisecond, exitCode: 2, reason: "Error"},
		},
		{
			name: "an OOM kill that never became ready",
			annotations: map[string]string{
				"cluster.toucan.dev/exit-code":          "137",
				"cluster.toucan.dev/termination-reason": "OOMKilled",
				"cluster.toucan.dev/ready":              "false",
			},
			want: script{run: -1, exitCode: 137, reason: "OOMKilled", neverReady: true},
		},
		{
			name:        "a bad duration",
			annotations: map[string]string{"cluster.toucan.dev/pending-seconds": "soon"},
			wantErr:     "pending-seconds: want a number of seconds",
		},
		{
			name:        "an exit code out of range",
			annotations: map[string]string{"cluster.toucan.dev/exit-code": "300"},
			wantErr:     "exit-code: want 0..255",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseScript(tt.annotations)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPhase(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	exited := func(code int32) corev1.ContainerState {
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
	}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	crashLoop := &containerState{state: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}, lastState: exited(1)}

	tests := []struct {
		name       string
		policy     corev1.RestartPolicy
		initDone   bool
		initFailed bool
		containers []*containerState
		want       corev1.PodPhase
	}{
		{"init containers still running", corev1.RestartPolicyAlways, false, false, []*containerState{{state: waiting}}, corev1.PodPending},
		{"an init container failed, Never", corev1.RestartPolicyNever, false, true, []*containerState{{state: waiting}}, corev1.PodFailed},
		{"one running, one not started", corev1.RestartPolicyAlways, true, false, []*containerState{{state: running}, {state: waiting}}, corev1.PodPending},
		{"running", corev1.RestartPolicyAlways, true, false, []*containerState{{state: running}}, corev1.PodRunning},
		{"crash loop", corev1.RestartPolicyAlways, true, false, []*containerState{crashLoop}, corev1.PodRunning},
		{"all exited 0, Never", corev1.RestartPolicyNever, true, false, []*containerState{{state: exited(0)}, {state: exited(0)}}, corev1.PodSucceeded},
		{"one exited 3, Never", corev1.RestartPolicyNever, true, false, []*containerState{{state: exited(0)}, {state: exited(3)}}, corev1.PodFailed},
		{"exited 3, OnFailure restarts it", corev1.RestartPolicyOnFailure, true, false, []*containerState{{state: exited(3)}}, corev1.PodRunning},
		{"exited 0, OnFailure", corev1.RestartPolicyOnFailure, true, false, []*containerState{{state: exited(0)}}, corev1.PodSucceeded},
		{"exited 0, Always restarts it", corev1.RestartPolicyAlways, true, false, []*containerState{{state: exited(0)}}, corev1.PodRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &podWorker{
				pod:        &corev1.Pod{Spec: corev1.PodSpec{RestartPolicy: tt.policy}},
				initDone:   tt.initDone,
				initFailed: tt.initFailed,
				main:       tt.containers,
			}
			if got := w.phaseLocked(); got != tt.want {
				t.Fatalf("phase %s, want %s", got, tt.want)
			}
		})
	}
}

func TestIPPoolAddressesAreLoopbackAndReused(t *testing.T) {
	p := &ipPool{network: 42, next: 1, used: map[int]bool{}}
	seen := map[string]bool{}
	var first string
	for i := range 600 {
		ip, err := p.allocate()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(ip, "127.42.") || strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255") {
			t.Fatalf("address %s", ip)
		}
		if seen[ip] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip] = true
		if i == 0 {
			first = ip
		}
	}
	p.release(first)
	again, err := p.allocate()
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Fatalf("released %s, then got %s", first, again)
	}
}

func TestLastLines(t *testing.T) {
	log := []byte("one\ntwo\nthree\n")
	for n, want := range map[int]string{0: "", 1: "three\n", 2: "two\nthree\n", 5: "one\ntwo\nthree\n"} {
		if got := string(lastLines(log, n)); got != want {
			t.Errorf("lastLines(%d) = %q, want %q", n, got, want)
		}
	}
}
