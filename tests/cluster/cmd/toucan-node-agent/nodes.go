package main

// Nodes: read from the nodes file, registered with their capacity, kept alive by a Lease.

import (
	"context"
	"fmt"
	"log"
	"os"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/component-base/version"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

const (
	modeProcess   = "process"
	modeContainer = "container"
	modeScripted  = "scripted"

	// The node address: pods' logs are served there, and it is each pod's hostIP.
	nodeIP = "127.0.0.1"

	leaseNamespace    = "kube-node-lease"
	leaseDuration     = 40 * time.Second
	heartbeatInterval = 10 * time.Second
)

// nodeConfig is one node of the nodes file.
type nodeConfig struct {
	Name string `json:"name"`
	// Mode is "process", "container" or "scripted".
	Mode     string                                    `json:"mode"`
	Capacity map[corev1.ResourceName]resource.Quantity `json:"capacity"`
	Labels   map[string]string                         `json:"labels,omitempty"`
	Taints   []corev1.Taint                            `json:"taints,omitempty"`
}

func loadNodes(path string) ([]nodeConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var file struct {
		Nodes []nodeConfig `json:"nodes"`
	}
	if err := yaml.UnmarshalStrict(data, &file); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	seen := map[string]bool{}
	for i, n := range file.Nodes {
		switch {
		case n.Name == "":
			return nil, fmt.Errorf("%s: nodes[%d].name is empty", path, i)
		case seen[n.Name]:
			return nil, fmt.Errorf("%s: nodes[%d].name %q appears twice", path, i, n.Name)
		case n.Mode != modeProcess && n.Mode != modeContainer && n.Mode != modeScripted:
			return nil, fmt.Errorf("%s: nodes[%d].mode is %q, want %q, %q or %q", path, i, n.Mode, modeProcess, modeContainer, modeScripted)
		}
		if _, ok := n.Capacity[corev1.ResourcePods]; !ok {
			return nil, fmt.Errorf("%s: nodes[%d].capacity has no pods entry: no pod would fit", path, i)
		}
		seen[n.Name] = true
	}
	if len(file.Nodes) == 0 {
		return nil, fmt.Errorf("%s lists no nodes", path)
	}
	return file.Nodes, nil
}

func (n nodeConfig) labels() map[string]string {
	labels := map[string]string{
		corev1.LabelHostname:      n.Name,
		corev1.LabelOSStable:      "linux",
		corev1.LabelArchStable:    runtime.GOARCH,
		"cluster.toucan.dev/mode": n.Mode,
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	return labels
}

// registerNode creates the node (or takes over one left from an earlier agent) and reports it
// Ready with its capacity, as the kubelet's first status update does.
func (a *agent) registerNode(ctx context.Context, n nodeConfig, logPort int) error {
	nodes := a.client.CoreV1().Nodes()
	_, err := nodes.Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.labels()},
		Spec:       corev1.NodeSpec{Taints: n.Taints},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			node, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			node.Labels = n.labels()
			node.Spec.Taints = n.Taints
			_, err = nodes.Update(ctx, node, metav1.UpdateOptions{})
			return err
		})
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, message string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: message, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	capacity := corev1.ResourceList{}
	for name, q := range n.Capacity {
		capacity[name] = q
	}
	status := corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "toucan-node-agent reports no pressure"),
			condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "toucan-node-agent reports no pressure"),
			condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "toucan-node-agent reports no pressure"),
			condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "toucan-node-agent is running pods in "+n.Mode+" mode"),
		},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(logPort)}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          version.Get().GitVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "toucan-node-agent://" + n.Mode,
		},
	}
	// The node lifecycle controller may taint the new node meanwhile: retry on conflicts.
	var node *corev1.Node
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		current.Status = status
		node, err = nodes.UpdateStatus(ctx, current, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	return a.renewLease(ctx, node)
}

// renewLease creates or renews the node's Lease: the node lifecycle controller takes a node whose
// lease is not renewed for its grace period as lost, taints it and evicts its pods.
func (a *agent) renewLease(ctx context.Context, node *corev1.Node) error {
	leases := a.client.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, node.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: node.Name,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(node.Name),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())),
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

func (a *agent) heartbeat(ctx context.Context) {
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for name := range a.nodes {
			node, err := a.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				err = a.renewLease(ctx, node)
			}
			if err != nil && ctx.Err() == nil {
				log.Printf("renewing the lease of node %s: %v", name, err)
			}
		}
	}
}
