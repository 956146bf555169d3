package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The image of these tests: toucan's worker image, as its Dockerfile builds it.
var (
	workerImage = ocispec.ImageConfig{
		User:       "65532:65532",
		Env:        []string{"PATH=/usr/local/bin:/bin", "HOME=/tmp", "LD_LIBRARY_PATH=/usr/local/lib"},
		Entrypoint: nil,
		Cmd:        []string{"toucan-worker", "--help"},
		WorkingDir: "/tmp",
	}
	workerUsers = parseUserDB(
		[]byte("root:x:0:0:root:/root:/sbin/nologin\ntoucan:x:65532:65532:toucan:/tmp:/sbin/nologin\nbuilder:x:1000:1001::/tmp:/bin/sh\n"),
		[]byte("root:x:0:\ntoucan:x:65532:\nbuilders:x:1001:\nvideo:x:44:builder,toucan\n"))
)

func testBundle(change func(*corev1.Pod, *corev1.Container)) bundleSpec {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u-1"}}
	c := corev1.Container{Name: "main", Image: "toucan/worker:cpu"}
	if change != nil {
		change(pod, &c)
	}
	return bundleSpec{
		pod: pod, container: &c, image: workerImage, users: workerUsers,
		env:         map[string]string{"HOSTNAME": "p", "HOME": "/data"},
		hostname:    "p",
		cgroupsPath: "/toucan-agent/x",
	}
}

func mustConfig(t *testing.T, b bundleSpec) *specs.Spec {
	t.Helper()
	spec, err := containerConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestContainerArgv(t *testing.T) {
	env := map[string]string{"N": "3"}
	tests := []struct {
		name          string
		command, args []string
		image         ocispec.ImageConfig
		want          []string
	}{
		{"the image's entrypoint and cmd", nil, nil, ocispec.ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"serve"}}, []string{"/init", "serve"}},
		{"args replace cmd", nil, []string{"run", "$(N)"}, ocispec.ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"serve"}}, []string{"/init", "run", "3"}},
		{"command replaces entrypoint and cmd", []string{"sh", "-c"}, nil, ocispec.ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"serve"}}, []string{"sh", "-c"}},
		{"command and args", []string{"echo"}, []string{"$(N)", "$(MISSING)"}, ocispec.ImageConfig{Cmd: []string{"x"}}, []string{"echo", "3", "$(MISSING)"}},
		{"the image's words are not expanded", nil, nil, ocispec.ImageConfig{Cmd: []string{"echo", "$(N)"}}, []string{"echo", "$(N)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := containerArgv(&corev1.Container{Name: "c", Command: tt.command, Args: tt.args}, tt.image, env)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("argv %q, want %q", got, tt.want)
			}
		})
	}
	_, err := containerArgv(&corev1.Container{Name: "c", Image: "scratch-thing"}, ocispec.ImageConfig{}, env)
	var cfgErr configError
	if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), "has no command") {
		t.Fatalf("no command anywhere: %v", err)
	}
}

func TestContainerConfigEnvAndWorkingDir(t *testing.T) {
	spec := mustConfig(t, testBundle(nil))
	want := []string{"PATH=/usr/local/bin:/bin", "HOME=/data", "LD_LIBRARY_PATH=/usr/local/lib", "HOSTNAME=p"}
	if !slices.Equal(spec.Process.Env, want) {
		t.Errorf("env %q, want %q (the pod's over the image's)", spec.Process.Env, want)
	}
	if spec.Process.Cwd != "/tmp" {
		t.Errorf("cwd %q, want the image's /tmp", spec.Process.Cwd)
	}
	if !slices.Equal(spec.Process.Args, []string{"toucan-worker", "--help"}) {
		t.Errorf("args %q", spec.Process.Args)
	}
	spec = mustConfig(t, testBundle(func(_ *corev1.Pod, c *corev1.Container) { c.WorkingDir = "/work" }))
	if spec.Process.Cwd != "/work" {
		t.Errorf("cwd %q, want the pod's /work", spec.Process.Cwd)
	}
	if env := mergeEnv(nil, nil); !slices.Equal(env, []string{"PATH=" + defaultPath}) {
		t.Errorf("no PATH anywhere gives %q", env)
	}
}

func TestContainerConfigUser(t *testing.T) {
	tests := []struct {
		name    string
		image   string
		change  func(*corev1.Pod, *corev1.Container)
		want    specs.User
		wantErr string
	}{
		{name: "the image's user and group", image: "65532:65532", want: specs.User{UID: 65532, GID: 65532, AdditionalGids: []uint32{65532, 44}}},
		{name: "an image user by name", image: "builder", want: specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{1001, 44}}},
		{name: "no image user is root", image: "", want: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0}}},
		{
			name: "runAsUser replaces the image's user, its group from /etc/passwd", image: "65532:65532",
			change: func(p *corev1.Pod, _ *corev1.Container) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1000))}
			},
			want: specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{1001, 44}},
		},
		{
			name: "the container's runAsUser and runAsGroup over the pod's, fsGroup and supplemental groups", image: "65532:65532",
			change: func(p *corev1.Pod, c *corev1.Container) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To(int64(1)), FSGroup: ptr.To(int64(2000)), SupplementalGroups: []int64{3000}}
				c.SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To(int64(4242)), RunAsGroup: ptr.To(int64(4343))}
			},
			want: specs.User{UID: 4242, GID: 4343, AdditionalGids: []uint32{4343, 2000, 3000}},
		},
		{
			name: "runAsGroup alone", image: "65532",
			change: func(p *corev1.Pod, _ *corev1.Container) {
				p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsGroup: ptr.To(int64(5))}
			},
			wantErr: "runAsGroup 5 is set without runAsUser",
		},
		{name: "a user the image does not have", image: "nobody", wantErr: `user "nobody" is not in the image's /etc/passwd`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBundle(tt.change)
			b.image.User = tt.image
			spec, err := containerConfig(b)
			if tt.wantErr != "" {
				var cfgErr configError
				if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want a configError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := spec.Process.User
			if got.UID != tt.want.UID || got.GID != tt.want.GID || !slices.Equal(got.AdditionalGids, tt.want.AdditionalGids) {
				t.Fatalf("user %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestContainerConfigRunAsNonRoot(t *testing.T) {
	nonRoot := func(p *corev1.Pod, _ *corev1.Container) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
	}
	tests := []struct {
		name, image string
		runAsUser   *int64
		wantErr     string
	}{
		{name: "an image without a user", image: "", wantErr: "container has runAsNonRoot and image will run as root"},
		{name: "an image of uid 0", image: "0:0", wantErr: "container has runAsNonRoot and image will run as root"},
		{name: "a user name cannot be verified", image: "toucan", wantErr: "image has non-numeric user (toucan), cannot verify user is non-root"},
		{name: "runAsUser 0", image: "65532", runAsUser: ptr.To(int64(0)), wantErr: "container's runAsUser breaks non-root policy"},
		{name: "a non-root image", image: "65532:65532"},
		{name: "runAsUser makes a root image non-root", image: "", runAsUser: ptr.To(int64(1000))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testBundle(func(p *corev1.Pod, c *corev1.Container) {
				nonRoot(p, c)
				c.SecurityContext = &corev1.SecurityContext{RunAsUser: tt.runAsUser}
			})
			b.image.User = tt.image
			_, err := containerConfig(b)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var cfgErr configError
			if !errors.As(err, &cfgErr) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "container: main") {
				t.Fatalf("error %v, want a configError containing %q and naming the container", err, tt.wantErr)
			}
		})
	}
}

func TestContainerConfigSecurity(t *testing.T) {
	spec := mustConfig(t, testBundle(nil))
	if spec.Root.Readonly || spec.Process.NoNewPrivileges {
		t.Errorf("defaults: readonly root %v, no new privileges %v", spec.Root.Readonly, spec.Process.NoNewPrivileges)
	}
	if !slices.Equal(spec.Process.Capabilities.Bounding, defaultCapabilities) {
		t.Errorf("default capabilities %q", spec.Process.Capabilities.Bounding)
	}
	has := func(spec *specs.Spec, t specs.LinuxNamespaceType) bool {
		return slices.ContainsFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == t })
	}
	for _, want := range []specs.LinuxNamespaceType{specs.MountNamespace, specs.UTSNamespace, specs.PIDNamespace, specs.IPCNamespace} {
		if !has(spec, want) {
			t.Errorf("no %s namespace", want)
		}
	}
	if has(spec, specs.NetworkNamespace) {
		t.Errorf("a network namespace: the pod would lose its loopback pod IP")
	}
	hostNS := mustConfig(t, testBundle(func(p *corev1.Pod, _ *corev1.Container) { p.Spec.HostPID, p.Spec.HostIPC = true, true }))
	if has(hostNS, specs.PIDNamespace) || has(hostNS, specs.IPCNamespace) {
		t.Errorf("hostPID and hostIPC: namespaces %v", hostNS.Linux.Namespaces)
	}

	spec = mustConfig(t, testBundle(func(_ *corev1.Pod, c *corev1.Container) {
		c.SecurityContext = &corev1.SecurityContext{
			ReadOnlyRootFilesystem:   ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"net_bind_service"}},
		}
	}))
	if !spec.Root.Readonly || !spec.Process.NoNewPrivileges {
		t.Errorf("readonly root %v, no new privileges %v, want both", spec.Root.Readonly, spec.Process.NoNewPrivileges)
	}
	caps := spec.Process.Capabilities
	for _, set := range [][]string{caps.Bounding, caps.Effective, caps.Permitted} {
		if !slices.Equal(set, []string{"CAP_NET_BIND_SERVICE"}) {
			t.Errorf("capabilities %q, want CAP_NET_BIND_SERVICE alone", set)
		}
	}

	spec = mustConfig(t, testBundle(func(_ *corev1.Pod, c *corev1.Container) {
		c.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"NET_RAW", "CAP_MKNOD"}, Add: []corev1.Capability{"SYS_PTRACE"}}}
	}))
	got := spec.Process.Capabilities.Bounding
	if slices.Contains(got, "CAP_NET_RAW") || slices.Contains(got, "CAP_MKNOD") || !slices.Contains(got, "CAP_SYS_PTRACE") || !slices.Contains(got, "CAP_CHOWN") {
		t.Errorf("capabilities %q", got)
	}

	for name, change := range map[string]func(*corev1.Pod, *corev1.Container){
		"a capability Linux does not have": func(_ *corev1.Pod, c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_WIZARD"}}}
		},
		"a privileged container": func(_ *corev1.Pod, c *corev1.Container) {
			c.SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		},
	} {
		var cfgErr configError
		if _, err := containerConfig(testBundle(change)); !errors.As(err, &cfgErr) {
			t.Errorf("%s: %v, want a configError", name, err)
		}
	}
}

func TestContainerConfigResources(t *testing.T) {
	spec := mustConfig(t, testBundle(func(_ *corev1.Pod, c *corev1.Container) {
		c.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		}
	}))
	r := spec.Linux.Resources
	if r.Memory == nil || *r.Memory.Limit != 64<<20 {
		t.Errorf("memory %+v, want a 64 MiB limit", r.Memory)
	}
	if *r.CPU.Shares != 256 || *r.CPU.Quota != 150000 || *r.CPU.Period != 100000 {
		t.Errorf("cpu shares %d quota %d period %d, want 256, 150000, 100000", *r.CPU.Shares, *r.CPU.Quota, *r.CPU.Period)
	}
	if spec.Linux.CgroupsPath != "/toucan-agent/x" {
		t.Errorf("cgroups path %q", spec.Linux.CgroupsPath)
	}

	spec = mustConfig(t, testBundle(nil))
	r = spec.Linux.Resources
	if r.Memory != nil || r.CPU.Quota != nil || *r.CPU.Shares != minShares {
		t.Errorf("no requests or limits: memory %+v, cpu %+v", r.Memory, r.CPU)
	}
}

func TestContainerConfigMounts(t *testing.T) {
	b := testBundle(nil)
	b.files = map[string]string{"/etc/hosts": "/pod/hosts", "/etc/hostname": "/pod/hostname"}
	b.mounts = []mountSpec{
		{Source: "/pod/volumes/cache", Target: "/data/cache"},
		{Source: "/pod/volumes/data", Target: "/data/", ReadOnly: true},
		{Source: "/pod/volumes/hosts", Target: "/etc/hosts"},
		{Source: "/pod/termination-log", Target: "/dev/termination-log", Optional: true},
	}
	spec := mustConfig(t, b)
	index := map[string]int{}
	for i, m := range spec.Mounts {
		if _, twice := index[m.Destination]; twice {
			t.Errorf("%s mounted twice", m.Destination)
		}
		index[m.Destination] = i
	}
	for _, dest := range []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/etc/hostname", "/data", "/data/cache", "/dev/termination-log"} {
		if _, ok := index[dest]; !ok {
			t.Errorf("no mount at %s", dest)
		}
	}
	if m := spec.Mounts[index["/etc/hosts"]]; m.Source != "/pod/volumes/hosts" {
		t.Errorf("/etc/hosts from %s, want the pod's volume", m.Source)
	}
	if index["/data"] > index["/data/cache"] || index["/dev"] > index["/dev/termination-log"] {
		t.Errorf("a child mounted before its parent: %v", index)
	}
	if m := spec.Mounts[index["/data"]]; m.Type != "bind" || !slices.Contains(m.Options, "ro") {
		t.Errorf("/data: %+v, want a read-only bind", m)
	}
	if m := spec.Mounts[index["/data/cache"]]; slices.Contains(m.Options, "ro") {
		t.Errorf("/data/cache: %+v, want it writable", m)
	}
	if m := spec.Mounts[index["/sys"]]; !slices.Contains(m.Options, "ro") {
		t.Errorf("/sys: %+v, want it read-only", m)
	}
}
