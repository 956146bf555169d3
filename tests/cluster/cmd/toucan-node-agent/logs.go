package main

// The kubelet's log endpoint, GET /containerLogs/NAMESPACE/POD/CONTAINER, which the API server
// proxies `kubectl logs` to (the node's InternalIP and kubelet port). It serves HTTPS with a
// self-signed certificate: the API server does not verify kubelets unless told of a CA.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/toucan-dev/toucan/tests/cluster/internal/pki"
)

const followPollInterval = 200 * time.Millisecond

func (a *agent) serveLogs() (int, error) {
	ca, err := pki.NewCA("toucan-node-agent-ca")
	if err != nil {
		return 0, err
	}
	serving, err := pki.NewServing(ca, "toucan-node-agent", []string{"localhost"}, []net.IP{net.ParseIP(nodeIP)})
	if err != nil {
		return 0, err
	}
	cert := tls.Certificate{Certificate: [][]byte{serving.Cert.Raw, ca.Cert.Raw}, PrivateKey: serving.Key}
	ln, err := tls.Listen("tcp", net.JoinHostPort(nodeIP, "0"), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return 0, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", a.handleLogs)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return a.ctx }}
	go func() {
		if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("log server: %v", err)
		}
	}()
	go func() {
		<-a.ctx.Done()
		_ = server.Close()
	}()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (a *agent) handleLogs(rw http.ResponseWriter, r *http.Request) {
	namespace, podName, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	w := a.workerByName(namespace, podName)
	if w == nil {
		http.Error(rw, "pod "+namespace+"/"+podName+" does not run on this node agent", http.StatusNotFound)
		return
	}
	if w.node.Mode == modeScripted {
		// Scripted containers run nothing, so they print nothing.
		return
	}
	q := r.URL.Query()
	previous := q.Get("previous") == "true"
	path, instance, c := w.logFile(container, previous)
	if c == nil {
		http.Error(rw, "pod "+namespace+"/"+podName+" has no container "+container, http.StatusNotFound)
		return
	}
	if path == "" {
		http.Error(rw, "container "+container+" has no log yet", http.StatusBadRequest)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(rw, err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()

	limit := int64(-1)
	if v, err := strconv.ParseInt(q.Get("limitBytes"), 10, 64); err == nil && v > 0 {
		limit = v
	}
	out := &limitedWriter{w: rw, left: limit}
	rw.Header().Set("Content-Type", "text/plain")
	if v, err := strconv.Atoi(q.Get("tailLines")); err == nil && v >= 0 {
		data, err := io.ReadAll(f)
		if err != nil {
			return
		}
		_, _ = out.Write(lastLines(data, v))
	} else if _, err := io.Copy(out, f); err != nil {
		return
	}
	if q.Get("follow") != "true" || previous {
		return
	}
	flusher, _ := rw.(http.Flusher)
	reader := bufio.NewReader(f)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		if out.full() {
			return
		}
		running := w.instanceRunning(c, instance)
		if _, err := io.Copy(out, reader); err != nil {
			return
		}
		if !running {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(followPollInterval):
		}
	}
}

// logFile finds a container's log: its current (or last) instance, or the one before.
func (w *podWorker) logFile(name string, previous bool) (string, int32, *containerState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.allContainers() {
		if c.spec.Name != name {
			continue
		}
		instance := c.restarts
		if previous {
			instance--
		}
		if instance < 0 {
			return "", 0, c
		}
		path := filepath.Join(w.dir, "containers", name, strconv.Itoa(int(instance)), "log")
		if _, err := os.Stat(path); err != nil {
			return "", 0, c
		}
		return path, instance, c
	}
	return "", 0, nil
}

func (w *podWorker) instanceRunning(c *containerState, instance int32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return c.restarts == instance && c.state.Running != nil
}

func lastLines(data []byte, n int) []byte {
	if n == 0 {
		return nil
	}
	trimmed := bytes.TrimSuffix(data, []byte("\n"))
	idx := len(trimmed)
	for i := 0; i < n; i++ {
		idx = bytes.LastIndexByte(trimmed[:idx], '\n')
		if idx < 0 {
			return data
		}
	}
	return data[idx+1:]
}

// limitedWriter writes at most left bytes (all when left < 0).
type limitedWriter struct {
	w    io.Writer
	left int64
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.left < 0 {
		return l.w.Write(p)
	}
	whole := len(p)
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.w.Write(p)
	l.left -= int64(n)
	// The rest is dropped on purpose: report it written so that io.Copy goes on.
	return whole, err
}

func (l *limitedWriter) full() bool { return l.left == 0 }
