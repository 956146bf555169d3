package main

// The container-init helper. The agent starts it as each container's process, in a new mount
// namespace (whose mounts the Go runtime has made private), with the container's environment. It
// binds the volumes at their mount paths, enters the working directory and execs the command, so
// the container's process keeps the helper's pid. A mount path that does not exist on this
// machine is created (an empty folder or file is all that shows outside the namespace).

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

const (
	containerInitCommand = "container-init"
	// The exit code of a container that could not start, as container runtimes report it.
	startErrorExitCode = 128
)

type mountSpec struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// An optional mount that fails is skipped (the termination-message file).
	Optional bool `json:"optional,omitempty"`
}

// initSpec is what the agent hands the helper, as a JSON file.
type initSpec struct {
	Argv       []string    `json:"argv"`
	WorkingDir string      `json:"workingDir,omitempty"`
	Mounts     []mountSpec `json:"mounts,omitempty"`
	// Namespaced is false when the agent could not make a mount namespace (not root): mounts
	// are skipped.
	Namespaced bool `json:"namespaced"`
	// The helper writes why the container could not start here, for the container's status.
	StartErrorPath string `json:"startErrorPath"`
}

func containerInit(args []string) int {
	if len(args) != 1 {
		fmt.Fprintf(os.Stderr, "usage: toucan-node-agent %s SPEC.json\n", containerInitCommand)
		return 2
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "container-init: %v\n", err)
		return startErrorExitCode
	}
	var spec initSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		fmt.Fprintf(os.Stderr, "container-init: reading %s: %v\n", args[0], err)
		return startErrorExitCode
	}
	err = startContainer(spec)
	// Only reached when the container could not start.
	message := err.Error()
	_ = os.WriteFile(spec.StartErrorPath, []byte(message), 0o644)
	fmt.Fprintf(os.Stderr, "container-init: %s\n", message)
	return startErrorExitCode
}

func startContainer(spec initSpec) error {
	if spec.Namespaced {
		for _, m := range sortMounts(spec.Mounts) {
			if err := bind(m); err != nil && !m.Optional {
				return fmt.Errorf("mounting %s at %s: %w", m.Source, m.Target, err)
			}
		}
	}
	if spec.WorkingDir != "" {
		if err := os.MkdirAll(spec.WorkingDir, 0o755); err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		if err := os.Chdir(spec.WorkingDir); err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
	}
	if len(spec.Argv) == 0 {
		return errors.New("no command")
	}
	path, err := exec.LookPath(spec.Argv[0])
	if err != nil {
		return fmt.Errorf("exec: %q: %w", spec.Argv[0], err)
	}
	err = syscall.Exec(path, spec.Argv, os.Environ())
	return fmt.Errorf("exec %s: %w", path, err)
}

// sortMounts orders mounts parents before children: /data before /data/cache.
func sortMounts(mounts []mountSpec) []mountSpec {
	sorted := append([]mountSpec(nil), mounts...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return strings.Count(filepath.Clean(sorted[i].Target), "/") < strings.Count(filepath.Clean(sorted[j].Target), "/")
	})
	return sorted
}

func bind(m mountSpec) error {
	info, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if info.IsDir() {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(m.Target), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(m.Target); errors.Is(err, os.ErrNotExist) {
			f, err := os.OpenFile(m.Target, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
	}
	if err := syscall.Mount(m.Source, m.Target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	if m.ReadOnly {
		return syscall.Mount("", m.Target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
	}
	return nil
}
