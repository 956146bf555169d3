package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const (
	apiserverStartTimeout = 90 * time.Second
	clusterReadyTimeout   = 90 * time.Second
	pollInterval          = 100 * time.Millisecond
)

// waitAPIServer waits until /readyz answers 200, or fails as soon as the apiserver exits.
func waitAPIServer(ctx context.Context, group *processGroup, server, caPath, token string) error {
	ca, err := os.ReadFile(caPath)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	deadline := time.Now().Add(apiserverStartTimeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, server+"/readyz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := pause(ctx, group, deadline, "kube-apiserver to answer /readyz"); err != nil {
			return err
		}
	}
}

// waitClusterReady waits until pods can run: the default service account exists (the
// ServiceAccount admission plugin refuses pods before), the root CA config map is published
// (every pod mounts it), and every node is Ready.
func waitClusterReady(ctx context.Context, group *processGroup, kubeconfig string, nodes []string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(clusterReadyTimeout)
	waitFor := func(what string, ok func() bool) error {
		for !ok() {
			if err := pause(ctx, group, deadline, what); err != nil {
				return err
			}
		}
		return nil
	}
	if err := waitFor("the default service account", func() bool {
		_, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return err
	}
	if err := waitFor("the kube-root-ca.crt config map", func() bool {
		_, err := client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil
	}); err != nil {
		return err
	}
	for _, name := range nodes {
		if err := waitFor("node "+name+" to be Ready", func() bool {
			node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status == corev1.ConditionTrue
				}
			}
			return false
		}); err != nil {
			return err
		}
	}
	return nil
}

// pause waits one poll interval, and fails when a component exited, the deadline passed, or
// ctx was cancelled.
func pause(ctx context.Context, group *processGroup, deadline time.Time, what string) error {
	if time.Now().After(deadline) {
		return fmt.Errorf("timed out waiting for %s", what)
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("signalled while waiting for %s", what)
	case exit := <-group.exited:
		return fmt.Errorf("%s exited while waiting for %s (%v); see %s", exit.name, what, exit.err, exit.logPath)
	case <-time.After(pollInterval):
		return nil
	}
}

// nodeNames reads the names of the nodes from the agent's nodes file.
func nodeNames(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Nodes []struct {
			Name string `json:"name"`
		} `json:"nodes"`
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	names := make([]string, 0, len(file.Nodes))
	for _, n := range file.Nodes {
		names = append(names, n.Name)
	}
	return names, nil
}
