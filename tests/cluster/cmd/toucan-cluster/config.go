package main

// The files of one cluster: keys, tokens, kubeconfigs and the components' command lines.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/toucan-dev/toucan/tests/cluster/internal/pki"
)

const (
	// The issuer of service-account tokens, as a real cluster names it.
	serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local"
	serviceClusterIPs    = "10.0.0.0/24"
	// The first address of serviceClusterIPs: the `kubernetes` Service, also in the certificate.
	kubernetesServiceIP = "10.0.0.1"
	// The controllers and the scheduler create pods by the thousand in scale tests.
	componentQPS   = 500
	componentBurst = 1000
)

// layout names every path of a cluster's folder.
type layout struct {
	dir             string
	pki             string
	caCert, caKey   string
	serveCert       string
	serveKey        string
	saKey, saPub    string
	tokens          string
	etcdData        string
	logs            string
	components      string
	agentState      string
	images          string // OCI layouts tests add while the cluster runs (container mode)
	adminKubeconfig string
}

func newLayout(dir string) (layout, error) {
	l := layout{
		dir:             dir,
		pki:             filepath.Join(dir, "pki"),
		etcdData:        filepath.Join(dir, "etcd"),
		logs:            filepath.Join(dir, "logs"),
		components:      filepath.Join(dir, "components"),
		agentState:      filepath.Join(dir, "agent"),
		images:          filepath.Join(dir, "images"),
		adminKubeconfig: filepath.Join(dir, "kubeconfig"),
	}
	l.caCert = filepath.Join(l.pki, "ca.crt")
	l.caKey = filepath.Join(l.pki, "ca.key")
	l.serveCert = filepath.Join(l.pki, "apiserver.crt")
	l.serveKey = filepath.Join(l.pki, "apiserver.key")
	l.saKey = filepath.Join(l.pki, "service-account.key")
	l.saPub = filepath.Join(l.pki, "service-account.pub")
	l.tokens = filepath.Join(l.pki, "tokens.csv")
	// A restart in the same folder starts from empty: the data is thrown away anyway.
	for _, d := range []string{l.etcdData, l.agentState} {
		if err := os.RemoveAll(d); err != nil {
			return l, err
		}
	}
	for _, d := range []string{l.pki, l.logs, l.components, l.agentState, l.images} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return l, err
		}
	}
	if err := os.Chmod(l.pki, 0o700); err != nil {
		return l, err
	}
	return l, nil
}

// secrets holds the bearer tokens of the cluster's users.
type secrets struct {
	admin, user, controllerManager, scheduler, agent string
}

func newToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeSecrets makes the CA, the serving certificate, the service-account key and the token file.
// The components run as members of system:masters: the cluster under test is toucan, not them.
// `user` belongs to no group but system:authenticated, so it may do nothing until a test grants
// it a role.
func writeSecrets(l layout) (secrets, error) {
	var s secrets
	for _, t := range []*string{&s.admin, &s.user, &s.controllerManager, &s.scheduler, &s.agent} {
		var err error
		if *t, err = newToken(); err != nil {
			return s, err
		}
	}
	ca, err := pki.NewCA("toucan-test-cluster-ca")
	if err != nil {
		return s, err
	}
	if err := ca.WriteFiles(l.caCert, l.caKey); err != nil {
		return s, err
	}
	serving, err := pki.NewServing(ca, "kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(kubernetesServiceIP)})
	if err != nil {
		return s, err
	}
	if err := serving.WriteFiles(l.serveCert, l.serveKey); err != nil {
		return s, err
	}
	if err := pki.WriteServiceAccountKey(l.saKey, l.saPub); err != nil {
		return s, err
	}
	lines := []string{
		fmt.Sprintf(`%s,admin,uid-admin,"system:masters"`, s.admin),
		fmt.Sprintf(`%s,user,uid-user`, s.user),
		fmt.Sprintf(`%s,system:kube-controller-manager,uid-kube-controller-manager,"system:masters"`, s.controllerManager),
		fmt.Sprintf(`%s,system:kube-scheduler,uid-kube-scheduler,"system:masters"`, s.scheduler),
		fmt.Sprintf(`%s,system:toucan-node-agent,uid-toucan-node-agent,"system:masters"`, s.agent),
	}
	if err := os.WriteFile(l.tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return s, err
	}
	tokens := filepath.Join(l.dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		return s, err
	}
	for name, token := range map[string]string{"admin": s.admin, "user": s.user} {
		if err := os.WriteFile(filepath.Join(tokens, name), []byte(token+"\n"), 0o600); err != nil {
			return s, err
		}
	}
	return s, nil
}

// writeKubeconfigs writes DIR/kubeconfig (contexts `admin`, the current one, and `user`) and one
// kubeconfig per component under DIR/components.
func writeKubeconfigs(l layout, server string, s secrets) error {
	ca, err := os.ReadFile(l.caCert)
	if err != nil {
		return err
	}
	kubeconfig := func(users map[string]string, current string) *clientcmdapi.Config {
		c := clientcmdapi.NewConfig()
		c.Clusters["toucan-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
		for name, token := range users {
			c.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
			c.Contexts[name] = &clientcmdapi.Context{Cluster: "toucan-test", AuthInfo: name, Namespace: "default"}
		}
		c.CurrentContext = current
		return c
	}
	if err := clientcmd.WriteToFile(*kubeconfig(map[string]string{"admin": s.admin, "user": s.user}, "admin"), l.adminKubeconfig); err != nil {
		return err
	}
	for name, token := range map[string]string{
		"controller-manager": s.controllerManager,
		"scheduler":          s.scheduler,
		"node-agent":         s.agent,
	} {
		path := filepath.Join(l.components, name+".kubeconfig")
		if err := clientcmd.WriteToFile(*kubeconfig(map[string]string{name: token}, name), path); err != nil {
			return err
		}
	}
	env := fmt.Sprintf("KUBECONFIG=%s\nTOUCAN_CLUSTER_SERVER=%s\n", l.adminKubeconfig, server)
	return os.WriteFile(filepath.Join(l.dir, "env"), []byte(env), 0o644)
}

func apiserverArgs(l layout, port int, etcdURL string) []string {
	return []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + l.pki,
		"--tls-cert-file=" + l.serveCert,
		"--tls-private-key-file=" + l.serveKey,
		"--client-ca-file=" + l.caCert,
		"--token-auth-file=" + l.tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=" + serviceAccountIssuer,
		"--service-account-key-file=" + l.saPub,
		"--service-account-signing-key-file=" + l.saKey,
		"--service-cluster-ip-range=" + serviceClusterIPs,
		// Endpoints may not hold loopback addresses, and nothing could route to them anyway.
		"--endpoint-reconciler-type=none",
		// The node agent serves pod logs on 127.0.0.1; nodes have no resolvable host names.
		"--kubelet-preferred-address-types=InternalIP",
		"--allow-privileged=true",
		"--max-requests-inflight=2000",
		"--max-mutating-requests-inflight=1000",
		"--profiling=false",
	}
}

func controllerManagerArgs(l layout) []string {
	return []string{
		"--kubeconfig=" + filepath.Join(l.components, "controller-manager.kubeconfig"),
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file=" + l.saKey,
		"--root-ca-file=" + l.caCert,
		"--cluster-signing-cert-file=" + l.caCert,
		"--cluster-signing-key-file=" + l.caKey,
		"--kube-api-qps=" + strconv.Itoa(componentQPS),
		"--kube-api-burst=" + strconv.Itoa(componentBurst),
		"--profiling=false",
	}
}

func schedulerConfigPath(l layout) string { return filepath.Join(l.components, "scheduler.yaml") }

// writeSchedulerConfig writes the scheduler's configuration: its client flags are deprecated.
func writeSchedulerConfig(l layout) error {
	cfg := map[string]any{
		"apiVersion": "kubescheduler.config.k8s.io/v1",
		"kind":       "KubeSchedulerConfiguration",
		"clientConnection": map[string]any{
			"kubeconfig": filepath.Join(l.components, "scheduler.kubeconfig"),
			"qps":        componentQPS,
			"burst":      componentBurst,
		},
		"leaderElection": map[string]any{"leaderElect": false},
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(schedulerConfigPath(l), data, 0o644)
}

func schedulerArgs(l layout) []string {
	return []string{"--config=" + schedulerConfigPath(l), "--secure-port=0"}
}

func agentArgs(l layout, o options, apiPort int) []string {
	images := l.images
	if o.images != "" {
		images = o.images + string(filepath.ListSeparator) + images
	}
	args := []string{
		"--kubeconfig=" + filepath.Join(l.components, "node-agent.kubeconfig"),
		"--nodes=" + o.nodesFile,
		"--state-dir=" + l.agentState,
		"--apiserver-port=" + strconv.Itoa(apiPort),
		"--images=" + images,
	}
	if o.imageCache != "" {
		args = append(args, "--image-cache="+o.imageCache)
	}
	return args
}

// freePorts finds n distinct free loopback ports. Another process may take one before its
// component binds it; tests/cluster/up then starts the cluster again.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
