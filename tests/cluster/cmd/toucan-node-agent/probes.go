package main

// Probes: startup, then readiness and liveness, with the thresholds of the pod spec. Exec probes
// run inside the container: in its mount namespace through nsenter (process mode, the agent
// being root), with `runc exec` (container mode).

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// runProbes runs the container's probes until ctx ends. It sends on livenessFailed once the
// liveness probe fails failureThreshold times in a row.
func (w *podWorker) runProbes(ctx context.Context, c *containerState, run instanceRunner, livenessFailed chan<- string) {
	spec := c.spec
	if spec.StartupProbe != nil {
		if _, ok := w.probeUntil(ctx, spec.StartupProbe, &spec, run, true); !ok {
			return
		}
		w.update(func() {
			c.started = true
			c.ready = spec.ReadinessProbe == nil
		})
	}
	if spec.LivenessProbe != nil {
		go func() {
			if msg, ok := w.probeUntil(ctx, spec.LivenessProbe, &spec, run, false); ok {
				select {
				case livenessFailed <- msg:
				default:
				}
			}
		}()
	}
	if spec.ReadinessProbe != nil {
		w.probeLoop(ctx, spec.ReadinessProbe, &spec, run, func(ready bool, _ string) {
			w.update(func() { c.ready = ready && c.state.Running != nil })
		})
	}
}

// probeUntil probes until the result is `want` by the thresholds; ok is false when ctx ended.
func (w *podWorker) probeUntil(ctx context.Context, p *corev1.Probe, c *corev1.Container, run instanceRunner, want bool) (string, bool) {
	done := make(chan string, 1)
	probeCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go w.probeLoop(probeCtx, p, c, run, func(result bool, msg string) {
		if result == want {
			select {
			case done <- msg:
			default:
			}
		}
	})
	select {
	case msg := <-done:
		return msg, true
	case <-ctx.Done():
		return "", false
	}
}

// probeLoop probes every period and calls report whenever the thresholded result is decided.
func (w *podWorker) probeLoop(ctx context.Context, p *corev1.Probe, c *corev1.Container, run instanceRunner, report func(bool, string)) {
	period := seconds(p.PeriodSeconds, 10)
	timeout := seconds(p.TimeoutSeconds, 1)
	successThreshold := max(int(p.SuccessThreshold), 1)
	failureThreshold := max(int(p.FailureThreshold), 1)
	select {
	case <-ctx.Done():
		return
	case <-time.After(seconds(p.InitialDelaySeconds, 0)):
	}
	var successes, failures int
	for {
		err := w.probeOnce(ctx, p, c, run, timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			successes, failures = successes+1, 0
			if successes >= successThreshold {
				report(true, "")
			}
		} else {
			successes, failures = 0, failures+1
			if failures >= failureThreshold {
				report(false, err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(period):
		}
	}
}

func seconds(s int32, fallback int) time.Duration {
	if s <= 0 {
		return time.Duration(fallback) * time.Second
	}
	return time.Duration(s) * time.Second
}

func (w *podWorker) probeOnce(ctx context.Context, p *corev1.Probe, c *corev1.Container, run instanceRunner, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.Exec != nil:
		return w.execProbe(ctx, p.Exec.Command, run)
	case p.HTTPGet != nil:
		return w.httpProbe(ctx, p.HTTPGet, c)
	case p.TCPSocket != nil:
		port, err := resolvePort(p.TCPSocket.Port, c)
		if err != nil {
			return err
		}
		return w.dial(ctx, p.TCPSocket.Host, port)
	case p.GRPC != nil:
		// No gRPC health client here: a connection is taken as healthy.
		return w.dial(ctx, "", int(p.GRPC.Port))
	}
	return fmt.Errorf("a probe of no known kind")
}

func (w *podWorker) execProbe(ctx context.Context, command []string, run instanceRunner) error {
	if len(command) == 0 {
		return fmt.Errorf("exec probe without a command")
	}
	out, err := run.probe(ctx, command).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func (w *podWorker) httpProbe(ctx context.Context, g *corev1.HTTPGetAction, c *corev1.Container) error {
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = w.podIP
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port)), Path: g.Path}
	if u.Path == "" {
		u.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet's probes
		DisableKeepAlives: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe %s answered %d", u.String(), resp.StatusCode)
	}
	return nil
}

func (w *podWorker) dial(ctx context.Context, host string, port int) error {
	if host == "" {
		host = w.podIP
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return conn.Close()
}

// resolvePort turns a probe's port, a number or the name of a container port, into a number.
func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, port.StrVal)
}
