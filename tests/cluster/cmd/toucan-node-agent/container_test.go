package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseOOMKills(t *testing.T) {
	for name, tt := range map[string]struct {
		data string
		want int
	}{
		"cgroup v1 memory.oom_control": {"oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 2},
		"cgroup v2 memory.events":      {"low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n", 1},
		"none":                         {"oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", 0},
	} {
		got, err := parseOOMKills([]byte(tt.data))
		if err != nil || got != tt.want {
			t.Errorf("%s: %d, %v, want %d", name, got, err, tt.want)
		}
	}
	if _, err := parseOOMKills([]byte("under_oom 0\n")); err == nil {
		t.Errorf("a file without oom_kill gave no error")
	}
}

func TestRuncError(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	lines := `{"level":"warning","msg":"a warning","time":"2026-12-05T03:31:00Z"}
{"level":"error","msg":"runc run failed: unable to start container process: exec: \"nosuch\": executable file not found in $PATH","time":"2026-12-05T03:31:00Z"}
`
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	want := `runc run failed: unable to start container process: exec: "nosuch": executable file not found in $PATH`
	if got := runcError(log, nil); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := runcError(filepath.Join(t.TempDir(), "none"), nil); !strings.Contains(got, "before the container started") {
		t.Errorf("without a log: %q", got)
	}
}

func TestLoadNodesModes(t *testing.T) {
	dir := t.TempDir()
	write := func(mode string) string {
		path := filepath.Join(dir, mode+".yaml")
		data := "nodes:\n  - name: n\n    mode: " + mode + "\n    capacity: {pods: \"10\"}\n"
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, mode := range []string{modeProcess, modeContainer, modeScripted} {
		nodes, err := loadNodes(write(mode))
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		if got := nodes[0].labels()["cluster.toucan.dev/mode"]; got != mode {
			t.Errorf("mode %s: label %q", mode, got)
		}
	}
	if _, err := loadNodes(write("vm")); err == nil || !strings.Contains(err.Error(), `nodes[0].mode is "vm"`) {
		t.Errorf("mode vm: %v", err)
	}
}
