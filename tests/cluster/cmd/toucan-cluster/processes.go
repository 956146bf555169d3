package main

import (
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// How long a component has to exit after SIGTERM before it gets SIGKILL.
const stopGrace = 20 * time.Second

// processGroup runs the cluster's components as child processes, each logging to
// LOGS/NAME.log, and stops them in the reverse order of their start.
type processGroup struct {
	logs    string
	running []*component
	exited  chan exit
}

type component struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	stopped atomic.Bool
}

// exit reports a component that exited while the cluster was running.
type exit struct {
	name    string
	err     error
	logPath string
}

func newProcessGroup(logs string) *processGroup {
	return &processGroup{logs: logs, exited: make(chan exit, 8)}
}

func (g *processGroup) start(name, path string, args []string) error {
	logPath := filepath.Join(g.logs, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = out, out
	// The kernel kills the child should this process die first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("starting %s: %w", name, err)
	}
	c := &component{name: name, cmd: cmd, done: make(chan struct{})}
	g.running = append(g.running, c)
	log.Printf("started %s (pid %d), log %s", name, cmd.Process.Pid, logPath)
	go func() {
		err := cmd.Wait()
		out.Close()
		close(c.done)
		if !c.stopped.Load() {
			g.exited <- exit{name: name, err: err, logPath: logPath}
		}
	}()
	return nil
}

// stopAll stops the components, the last started first, so that the node agent stops its pods
// while the API server still answers.
func (g *processGroup) stopAll() {
	for i := len(g.running) - 1; i >= 0; i-- {
		c := g.running[i]
		c.stopped.Store(true)
		select {
		case <-c.done:
			continue
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(stopGrace):
			log.Printf("%s did not exit within %s of SIGTERM: killing it", c.name, stopGrace)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	g.running = nil
}
