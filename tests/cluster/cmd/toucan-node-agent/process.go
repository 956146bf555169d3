package main

// Process mode: a container is the container-init helper's process (init.go), which binds the
// volumes in a mount namespace of its own and execs the command on this machine.

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

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
	mounts = withHostsMount(mounts, w.hostsPath())
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

func (p *processInstance) awaitStart(_ context.Context, cmd *exec.Cmd, _ <-chan struct{}) (int, bool) {
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
