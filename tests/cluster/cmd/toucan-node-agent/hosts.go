package main

// Name resolution without cluster DNS. Each pod of a process- or container-mode node has a hosts
// file of its own, bound at /etc/hosts in each of its containers, with what a kubelet writes there
// (localhost, the pod's own names) and, in place of CoreDNS, the names of the endpoints of the
// services of the pod's namespace: HOST.SVC.NS.svc.cluster.local for a pod with spec.hostname HOST
// and spec.subdomain SVC that service SVC selects, and SVC.NS.svc.cluster.local for each pod of a
// headless service. glibc applies search domains to DNS only, not to /etc/hosts, so each name is
// written in its shorter forms too (HOST.SVC, HOST.SVC.NS, ...).
//
// The endpoints come from the services and the pods themselves, not from EndpointSlices: pod IPs
// are loopback addresses here, which the API server refuses in an EndpointSlice (the
// EndpointSlice controller's updates fail, and the slices of a service stay empty). A change to a
// service, or to a pod's IP, labels, phase or readiness, rewrites the hosts files of the agent's
// pods in its namespace.

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const (
	clusterDomain = "cluster.local"
	etcHosts      = "/etc/hosts"
	// The kubelet's first lines.
	managedHostsHeader            = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
)

// podHostname is the pod's hostname as the kubelet makes it: spec.hostname or else the pod's
// name, cut to 63 characters without a trailing '-' or '.'.
func podHostname(pod *corev1.Pod) string {
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	if len(hostname) > maxHostname {
		hostname = strings.TrimRight(hostname[:maxHostname], "-.")
	}
	return hostname
}

// renderHosts is the content of a pod's hosts file: the kubelet's (for a pod on the host network,
// this machine's hosts file, nodeHosts, under its header), the pod's hostAliases, then a line per
// named endpoint of the services of its namespace (serviceEntries). machineHostname, when not
// empty, is one more name of the pod's own line: a process-mode pod has no UTS namespace, so its
// processes get this machine's hostname from gethostname, and it resolves to the pod's IP as a
// pod's hostname does.
func renderHosts(pod *corev1.Pod, podIP, machineHostname string, nodeHosts []byte, services []*corev1.Service, pods []*corev1.Pod) []byte {
	var b bytes.Buffer
	line := func(ip string, names ...string) {
		b.WriteString(ip + "\t" + strings.Join(names, "\t") + "\n")
	}
	if pod.Spec.HostNetwork {
		b.WriteString(managedHostsHeaderHostNetwork)
		b.Write(nodeHosts)
		if len(nodeHosts) > 0 && !bytes.HasSuffix(nodeHosts, []byte("\n")) {
			b.WriteString("\n")
		}
	} else {
		b.WriteString(managedHostsHeader)
		line("127.0.0.1", "localhost")
		line("::1", "localhost ip6-localhost ip6-loopback")
		line("fe00::0", "ip6-localnet")
		line("fe00::0", "ip6-mcastprefix")
		line("fe00::1", "ip6-allnodes")
		line("fe00::2", "ip6-allrouters")
		if podIP != "" {
			hostname := podHostname(pod)
			names := []string{hostname}
			if sub := pod.Spec.Subdomain; sub != "" {
				names = []string{hostname + "." + sub + "." + pod.Namespace + ".svc." + clusterDomain, hostname + "." + sub, hostname}
			}
			if machineHostname != "" && !slices.Contains(names, machineHostname) {
				names = append(names, machineHostname)
			}
			line(podIP, names...)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, alias := range pod.Spec.HostAliases {
			line(alias.IP, alias.Hostnames...)
		}
	}
	if entries := serviceEntries(pod.Namespace, services, pods); len(entries) > 0 {
		b.WriteString("\n# Endpoints of the services of namespace " + pod.Namespace + " (the node agent's stand-in for cluster DNS).\n")
		for _, e := range entries {
			line(e.ip, e.names...)
		}
	}
	return b.Bytes()
}

type hostsEntry struct {
	name  string // the fully qualified name, the first of names
	ip    string
	names []string
}

// serviceEntries lists the named endpoints of the services of namespace, as the EndpointSlice
// controller would make them from the services' selectors and the pods, and as CoreDNS serves
// them: the pods a service selects that have an IP and are not done, those ready only unless the
// service has publishNotReadyAddresses; HOST.SVC for a pod whose spec.hostname is HOST and whose
// spec.subdomain is the service's name SVC, and SVC for each pod of a headless service. Sorted by
// name and address, each once.
func serviceEntries(namespace string, services []*corev1.Service, pods []*corev1.Pod) []hostsEntry {
	seen := map[string]bool{}
	var entries []hostsEntry
	add := func(ip string, parts ...string) {
		// NAME.NS.svc.cluster.local, NAME.NS.svc, NAME.NS and NAME, where NAME is parts joined.
		name := strings.Join(parts, ".")
		names := []string{
			name + "." + namespace + ".svc." + clusterDomain,
			name + "." + namespace + ".svc",
			name + "." + namespace,
			name,
		}
		if key := ip + " " + names[0]; !seen[key] {
			seen[key] = true
			entries = append(entries, hostsEntry{name: names[0], ip: ip, names: names})
		}
	}
	for _, svc := range services {
		// A service without a selector has the endpoints someone else writes, none here.
		if svc.Namespace != namespace || len(svc.Spec.Selector) == 0 {
			continue
		}
		selector := labels.SelectorFromSet(svc.Spec.Selector)
		headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
		for _, pod := range pods {
			if pod.Namespace != namespace || !selector.Matches(labels.Set(pod.Labels)) || !endpointReady(pod, svc) {
				continue
			}
			for _, ip := range podIPs(pod) {
				if pod.Spec.Hostname != "" && pod.Spec.Subdomain == svc.Name {
					add(ip, pod.Spec.Hostname, svc.Name)
				}
				if headless {
					add(ip, svc.Name)
				}
			}
		}
	}
	slices.SortFunc(entries, func(x, y hostsEntry) int {
		return cmp.Or(cmp.Compare(x.name, y.name), cmp.Compare(x.ip, y.ip))
	})
	return entries
}

// endpointReady says whether the pod is a ready endpoint of the service, as the EndpointSlice
// controller decides: not Succeeded or Failed, with an IP, and Ready and not being deleted unless
// the service publishes addresses that are not ready.
func endpointReady(pod *corev1.Pod, svc *corev1.Service) bool {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || len(podIPs(pod)) == 0 {
		return false
	}
	if svc.Spec.PublishNotReadyAddresses {
		return true
	}
	if pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podIPs(pod *corev1.Pod) []string {
	var ips []string
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && pod.Status.PodIP != "" {
		ips = append(ips, pod.Status.PodIP)
	}
	return ips
}

// endpointChanged says whether a new version of a pod may change the hosts files of its
// namespace: what serviceEntries reads of it changed.
func endpointChanged(old, pod *corev1.Pod) bool {
	view := func(p *corev1.Pod) string {
		ready := false
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		return fmt.Sprint(p.Labels, p.Spec.Hostname, p.Spec.Subdomain, p.Status.Phase, podIPs(p), ready, p.DeletionTimestamp != nil)
	}
	return view(old) != view(pod)
}

// writeInPlace replaces the content of the file at path without replacing the file: a bind mount
// holds on to the inode it was made from, so a new file renamed over it would go unseen. A reader
// never finds it empty or cut short: the new content goes over the old one first, padded with a
// comment to the old length, and the file is cut to the new length after.
func writeInPlace(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	data := content
	if pad := int(info.Size()) - len(content); pad > 0 {
		data = append(append([]byte(nil), content...), '#')
		data = append(data, bytes.Repeat([]byte(" "), pad-1)...)
		data[len(data)-1] = '\n'
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		return err
	}
	if err := f.Truncate(int64(len(content))); err != nil {
		return err
	}
	return f.Chmod(0o644)
}

// withHostsMount adds the pod's hosts file at /etc/hosts unless the container mounts something
// there itself, as the kubelet does.
func withHostsMount(mounts []mountSpec, hostsFile string) []mountSpec {
	for _, m := range mounts {
		if path.Clean(m.Target) == etcHosts {
			return mounts
		}
	}
	return append(mounts, mountSpec{Source: hostsFile, Target: etcHosts})
}

func (w *podWorker) hostsPath() string { return filepath.Join(w.dir, "hosts") }

// startHosts writes the pod's hosts file, before its first container starts; from then on a
// change to the services or pods of its namespace rewrites it, until stopHosts.
func (w *podWorker) startHosts() error {
	w.hostsMu.Lock()
	w.hostsLive = true
	w.hostsMu.Unlock()
	return w.refreshHosts()
}

func (w *podWorker) stopHosts() {
	w.hostsMu.Lock()
	w.hostsLive = false
	w.hostsMu.Unlock()
}

// refreshHosts rewrites the pod's hosts file when its content changed.
func (w *podWorker) refreshHosts() error {
	w.hostsMu.Lock()
	defer w.hostsMu.Unlock()
	if !w.hostsLive {
		return nil
	}
	w.mu.Lock()
	pod, podIP := w.pod, w.podIP
	w.mu.Unlock()
	var machineHostname string
	if w.node.Mode == modeProcess {
		machineHostname, _ = os.Hostname()
	}
	var nodeHosts []byte
	if pod.Spec.HostNetwork {
		var err error
		if nodeHosts, err = os.ReadFile(etcHosts); err != nil {
			return err
		}
	}
	services, err := w.a.services.Services(w.ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var pods []*corev1.Pod
	// Only a service with a selector has endpoints here: thousands of scripted pods in a
	// namespace without one are not listed at every change of one of them.
	if slices.ContainsFunc(services, func(svc *corev1.Service) bool { return len(svc.Spec.Selector) > 0 }) {
		if pods, err = w.a.pods.Pods(w.ns).List(labels.Everything()); err != nil {
			return err
		}
	}
	content := renderHosts(pod, podIP, machineHostname, nodeHosts, services, pods)
	if w.hostsWritten != nil && bytes.Equal(content, w.hostsWritten) {
		return nil
	}
	if err := writeInPlace(w.hostsPath(), content); err != nil {
		return fmt.Errorf("writing its hosts file: %w", err)
	}
	w.hostsWritten = content
	return nil
}
