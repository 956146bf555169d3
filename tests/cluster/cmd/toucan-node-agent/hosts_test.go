package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const kubeletLines = `# Kubernetes-managed hosts file.
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
fe00::0	ip6-localnet
fe00::0	ip6-mcastprefix
fe00::1	ip6-allnodes
fe00::2	ip6-allrouters
`

func service(namespace, name string, headless, publishNotReady bool, selector map[string]string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       corev1.ServiceSpec{Selector: selector, ClusterIP: "10.96.0.10", PublishNotReadyAddresses: publishNotReady},
	}
	if headless {
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	}
	return svc
}

// runningPod is a pod with an IP, Running and Ready or not.
func runningPod(namespace, name, hostname, subdomain, ip string, ready bool, labels map[string]string) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Hostname: hostname, Subdomain: subdomain},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			PodIPs:     []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
		},
	}
}

func TestRenderHostsGang(t *testing.T) {
	gang := map[string]string{"gang": "fmnist-train-0"}
	web := map[string]string{"app": "web"}
	self := runningPod("ml", "fmnist-train-0-w1", "worker-1", "fmnist-train-0", "127.10.0.3", false, gang)
	done := runningPod("ml", "fmnist-train-0-w2", "worker-2", "fmnist-train-0", "127.10.0.4", true, gang)
	done.Status.Phase = corev1.PodSucceeded
	leaving := runningPod("ml", "web-2", "web-2", "web", "127.10.0.10", true, web)
	leaving.DeletionTimestamp = &metav1.Time{}
	pods := []*corev1.Pod{
		self,
		// Not Ready: still named, the gang's service publishes addresses that are not ready.
		runningPod("ml", "fmnist-train-0-w0", "worker-0", "fmnist-train-0", "127.10.0.2", false, gang),
		// Done: no longer an endpoint.
		done,
		// Not yet started: no IP.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ml", Name: "fmnist-train-0-w3", Labels: gang}, Spec: corev1.PodSpec{Hostname: "worker-3", Subdomain: "fmnist-train-0"}},
		// A service with a cluster IP: its ready pods whose subdomain names it, not a pod that is
		// not Ready, being deleted, without a hostname, or whose subdomain names another.
		runningPod("ml", "web-0", "web-0", "web", "127.10.0.7", true, web),
		runningPod("ml", "web-1", "web-1", "web", "127.10.0.8", false, web),
		leaving,
		runningPod("ml", "web-3", "", "web", "127.10.0.11", true, web),
		runningPod("ml", "web-4", "web-4", "other", "127.10.0.12", true, web),
		// Another namespace's pod, which the gang's selector would match.
		runningPod("other", "w5", "worker-5", "fmnist-train-0", "127.10.0.5", true, gang),
	}
	services := []*corev1.Service{
		service("ml", "fmnist-train-0", true, true, gang),
		service("ml", "web", false, false, web),
		// No selector: the endpoints someone else writes; none here.
		service("ml", "external", true, false, nil),
		service("other", "fmnist-train-0", true, true, gang),
	}
	want := kubeletLines + `127.10.0.3	worker-1.fmnist-train-0.ml.svc.cluster.local	worker-1.fmnist-train-0	worker-1

# Endpoints of the services of namespace ml (the node agent's stand-in for cluster DNS).
127.10.0.2	fmnist-train-0.ml.svc.cluster.local	fmnist-train-0.ml.svc	fmnist-train-0.ml	fmnist-train-0
127.10.0.3	fmnist-train-0.ml.svc.cluster.local	fmnist-train-0.ml.svc	fmnist-train-0.ml	fmnist-train-0
127.10.0.7	web-0.web.ml.svc.cluster.local	web-0.web.ml.svc	web-0.web.ml	web-0.web
127.10.0.2	worker-0.fmnist-train-0.ml.svc.cluster.local	worker-0.fmnist-train-0.ml.svc	worker-0.fmnist-train-0.ml	worker-0.fmnist-train-0
127.10.0.3	worker-1.fmnist-train-0.ml.svc.cluster.local	worker-1.fmnist-train-0.ml.svc	worker-1.fmnist-train-0.ml	worker-1.fmnist-train-0
`
	if got := string(renderHosts(self, "127.10.0.3", "", nil, services, pods)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// Before its IP is in its status the pod has its own line, not yet its endpoints'. In process
	// mode the line names this machine's hostname too.
	self.Status = corev1.PodStatus{}
	got := string(renderHosts(self, "127.10.0.3", "machine", nil, services, []*corev1.Pod{self}))
	if want := kubeletLines + "127.10.0.3\tworker-1.fmnist-train-0.ml.svc.cluster.local\tworker-1.fmnist-train-0\tworker-1\tmachine\n"; got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderHostsPlainPod(t *testing.T) {
	long := strings.Repeat("a", 62) + "-b"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: long, Namespace: "ns"},
		Spec: corev1.PodSpec{HostAliases: []corev1.HostAlias{
			{IP: "127.0.0.9", Hostnames: []string{"store", "store.local"}},
		}},
	}
	// The name cut to 63 characters loses its trailing '-'.
	want := kubeletLines + "127.10.0.4\t" + strings.Repeat("a", 62) + `

# Entries added by HostAliases.
127.0.0.9	store	store.local
`
	if got := string(renderHosts(pod, "127.10.0.4", "", nil, nil, nil)); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRenderHostsHostNetwork(t *testing.T) {
	pod := runningPod("ns", "p", "h", "s", nodeIP, true, nil)
	pod.Spec.HostNetwork = true
	peer := runningPod("ns", "peer", "peer", "s", "127.10.0.2", true, map[string]string{"app": "s"})
	services := []*corev1.Service{service("ns", "s", true, false, map[string]string{"app": "s"})}
	// This machine's hosts file, then the endpoints.
	want := `# Kubernetes-managed hosts file (host network).
127.0.0.1 localhost
127.0.0.1 machine

# Endpoints of the services of namespace ns (the node agent's stand-in for cluster DNS).
127.10.0.2	peer.s.ns.svc.cluster.local	peer.s.ns.svc	peer.s.ns	peer.s
127.10.0.2	s.ns.svc.cluster.local	s.ns.svc	s.ns	s
`
	got := string(renderHosts(pod, nodeIP, "machine", []byte("127.0.0.1 localhost\n127.0.0.1 machine"), services, []*corev1.Pod{pod, peer}))
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestEndpointChanged(t *testing.T) {
	pod := runningPod("ns", "p", "h", "s", "127.10.0.2", false, map[string]string{"app": "s"})
	same := pod.DeepCopy()
	same.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", RestartCount: 1}}
	if endpointChanged(pod, same) {
		t.Errorf("a restart count changed nothing the hosts files read")
	}
	for name, change := range map[string]func(*corev1.Pod){
		"ready":    func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionTrue },
		"phase":    func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
		"ip":       func(p *corev1.Pod) { p.Status.PodIPs = nil; p.Status.PodIP = "" },
		"labels":   func(p *corev1.Pod) { p.Labels = nil },
		"deleting": func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} },
	} {
		changed := pod.DeepCopy()
		change(changed)
		if !endpointChanged(pod, changed) {
			t.Errorf("%s: no change seen", name)
		}
	}
}

func TestWriteInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	var inode uint64
	// Longer, shorter (padded, then cut), empty: always the same file.
	for i, content := range []string{"127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n127.10.0.2\tpeer\n", "1.2.3.4\tx\n", ""} {
		if err := writeInPlace(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != content {
			t.Errorf("write %d: %q, want %q", i, data, content)
		}
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if ino := info.Sys().(*syscall.Stat_t).Ino; i == 0 {
			inode = ino
		} else if ino != inode {
			t.Errorf("write %d replaced the file (inode %d, was %d)", i, ino, inode)
		}
	}
}

func TestWithHostsMount(t *testing.T) {
	mounts := withHostsMount([]mountSpec{{Source: "/pod/volumes/data", Target: "/data"}}, "/pod/hosts")
	if len(mounts) != 2 || mounts[1] != (mountSpec{Source: "/pod/hosts", Target: "/etc/hosts"}) {
		t.Errorf("got %+v, want the pod's hosts file at /etc/hosts", mounts)
	}
	// A container that mounts a file of its own there keeps it.
	own := []mountSpec{{Source: "/pod/volumes/hosts/h", Target: "/etc/hosts/"}}
	if got := withHostsMount(own, "/pod/hosts"); len(got) != 1 {
		t.Errorf("got %+v, want the container's own mount alone", got)
	}
}
