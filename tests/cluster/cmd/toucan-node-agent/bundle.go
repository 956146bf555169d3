package main

// A container-mode container's OCI runtime config (an OCI bundle's config.json), built from the
// pod spec over the image config as a kubelet and containerd build it: the command and
// environment combined, the user resolved in the image's /etc/passwd and /etc/group, the
// security context, cgroup limits and the mounts of a container runtime plus the pod's volumes.
// Pure: the caller reads the image and writes the file.

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

const (
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// CFS period and CPU shares as the kubelet computes them from milli-CPUs.
	cpuPeriod = 100000
	minShares = 2
	minQuota  = 1000
)

// The capabilities a container gets unless its security context says otherwise: containerd's.
var defaultCapabilities = []string{
	"CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYS_CHROOT",
}

// Every capability Linux knows (capability.h), for `add: [ALL]` and to refuse a misspelt one.
var allCapabilities = []string{
	"CAP_AUDIT_CONTROL", "CAP_AUDIT_READ", "CAP_AUDIT_WRITE", "CAP_BLOCK_SUSPEND", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_KILL", "CAP_LEASE", "CAP_LINUX_IMMUTABLE",
	"CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_MKNOD", "CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_RAW", "CAP_PERFMON", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYSLOG", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_CHROOT", "CAP_SYS_MODULE",
	"CAP_SYS_NICE", "CAP_SYS_PACCT", "CAP_SYS_PTRACE", "CAP_SYS_RAWIO", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_WAKE_ALARM",
}

// What a container runtime hides or makes read-only under /proc and /sys: containerd's defaults.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// bundleSpec is everything a container's config.json is made of.
type bundleSpec struct {
	pod       *corev1.Pod
	container *corev1.Container
	image     ocispec.ImageConfig
	users     userDB
	// env is the container's environment from the pod spec (containerEnv), without the image's.
	env map[string]string
	// mounts are the volume mounts and the termination-message file (containerMounts).
	mounts []mountSpec
	// files are what the runtime binds over the image: /etc/hosts, /etc/hostname, ...
	files       map[string]string
	hostname    string
	cgroupsPath string
}

// containerConfig builds the runtime config; a configError when the pod asks for what cannot
// be (runAsNonRoot with a root image, an unknown capability, a user the image does not have).
func containerConfig(b bundleSpec) (*specs.Spec, error) {
	c := b.container
	sc := effectiveSecurityContext(b.pod, c)
	if c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged {
		return nil, configError{fmt.Errorf("container %s is privileged: container mode runs no privileged containers", c.Name)}
	}
	argv, err := containerArgv(c, b.image, b.env)
	if err != nil {
		return nil, err
	}
	if err := verifyRunAsNonRoot(b.pod, c, sc, b.image.User); err != nil {
		return nil, err
	}
	user, err := containerUser(b.pod, sc, b.image.User, b.users)
	if err != nil {
		return nil, configError{fmt.Errorf("container %s: %w", c.Name, err)}
	}
	caps, err := capabilities(c)
	if err != nil {
		return nil, err
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = b.image.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, configError{fmt.Errorf("container %s: working directory %q is not absolute", c.Name, cwd)}
	}
	noNewPrivileges := c.SecurityContext != nil && c.SecurityContext.AllowPrivilegeEscalation != nil && !*c.SecurityContext.AllowPrivilegeEscalation
	readonly := c.SecurityContext != nil && c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem

	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User: user,
			Args: argv,
			Env:  mergeEnv(b.image.Env, b.env),
			Cwd:  cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			NoNewPrivileges: noNewPrivileges,
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: readonly},
		Hostname: b.hostname,
		Mounts:   containerRuntimeMounts(b.mounts, b.files),
		Linux: &specs.Linux{
			Namespaces:    namespaces(b.pod),
			CgroupsPath:   b.cgroupsPath,
			Resources:     resources(c),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}, nil
}

// namespaces: mount and uts of its own; pid and ipc unless the pod shares this machine's. No
// network namespace ever: each pod keeps its loopback pod IP on this machine's network.
func namespaces(pod *corev1.Pod) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.UTSNamespace}}
	if !pod.Spec.HostPID {
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	if !pod.Spec.HostIPC {
		ns = append(ns, specs.LinuxNamespace{Type: specs.IPCNamespace})
	}
	return ns
}

// containerArgv combines the pod's command and args with the image's entrypoint and cmd as a
// container runtime does: command replaces the entrypoint and drops the image's cmd; args alone
// replace the cmd. Only the pod's words get $(VAR) expansion, as the kubelet expands them.
func containerArgv(c *corev1.Container, image ocispec.ImageConfig, env map[string]string) ([]string, error) {
	mapping := expansion.MappingFuncFor(env)
	expand := func(words []string) []string {
		out := make([]string, 0, len(words))
		for _, w := range words {
			out = append(out, expansion.Expand(w, mapping))
		}
		return out
	}
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(expand(c.Command), expand(c.Args)...)
	case len(c.Args) > 0:
		argv = append(slices.Clone(image.Entrypoint), expand(c.Args)...)
	default:
		argv = append(slices.Clone(image.Entrypoint), image.Cmd...)
	}
	if len(argv) == 0 {
		return nil, configError{fmt.Errorf("container %s has no command: neither its command and args nor image %s's entrypoint and cmd give one", c.Name, c.Image)}
	}
	return argv, nil
}

// mergeEnv is the image's environment with the pod's over it, and a PATH when neither has one.
func mergeEnv(image []string, pod map[string]string) []string {
	var env []string
	seen := map[string]int{}
	set := func(k, v string) {
		if i, ok := seen[k]; ok {
			env[i] = k + "=" + v
			return
		}
		seen[k] = len(env)
		env = append(env, k+"="+v)
	}
	set("PATH", defaultPath)
	for _, kv := range image {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	keys := make([]string, 0, len(pod))
	for k := range pod {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		set(k, pod[k])
	}
	return env
}

// securityIDs is the part of the security context that decides the user, the container's own
// over the pod's.
type securityIDs struct {
	runAsUser, runAsGroup *int64
	runAsNonRoot          *bool
}

func effectiveSecurityContext(pod *corev1.Pod, c *corev1.Container) securityIDs {
	var s securityIDs
	if p := pod.Spec.SecurityContext; p != nil {
		s = securityIDs{p.RunAsUser, p.RunAsGroup, p.RunAsNonRoot}
	}
	if cs := c.SecurityContext; cs != nil {
		if cs.RunAsUser != nil {
			s.runAsUser = cs.RunAsUser
		}
		if cs.RunAsGroup != nil {
			s.runAsGroup = cs.RunAsGroup
		}
		if cs.RunAsNonRoot != nil {
			s.runAsNonRoot = cs.RunAsNonRoot
		}
	}
	return s
}

// verifyRunAsNonRoot refuses a container that would run as root under runAsNonRoot, with the
// kubelet's messages.
func verifyRunAsNonRoot(pod *corev1.Pod, c *corev1.Container, sc securityIDs, imageUser string) error {
	if sc.runAsNonRoot == nil || !*sc.runAsNonRoot {
		return nil
	}
	where := fmt.Sprintf("(pod: %q, container: %s)", pod.Name+"_"+pod.Namespace+"("+string(pod.UID)+")", c.Name)
	if sc.runAsUser != nil {
		if *sc.runAsUser == 0 {
			return configError{fmt.Errorf("container's runAsUser breaks non-root policy %s", where)}
		}
		return nil
	}
	user, _, _ := strings.Cut(imageUser, ":")
	if user == "" {
		return configError{fmt.Errorf("container has runAsNonRoot and image will run as root %s", where)}
	}
	uid, err := strconv.ParseInt(user, 10, 64)
	if err != nil {
		return configError{fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root %s", user, where)}
	}
	if uid == 0 {
		return configError{fmt.Errorf("container has runAsNonRoot and image will run as root %s", where)}
	}
	return nil
}

// containerUser resolves the process's uid, gid and groups as containerd does: runAsUser (with
// runAsGroup) replaces the image's USER; a user without a group takes its /etc/passwd group (or
// 0); the groups are the primary one, those /etc/group lists the user in, then fsGroup and
// supplementalGroups.
func containerUser(pod *corev1.Pod, sc securityIDs, imageUser string, users userDB) (specs.User, error) {
	userstr := imageUser
	if sc.runAsUser != nil {
		userstr = strconv.FormatInt(*sc.runAsUser, 10)
		if sc.runAsGroup != nil {
			userstr += ":" + strconv.FormatInt(*sc.runAsGroup, 10)
		}
	} else if sc.runAsGroup != nil {
		return specs.User{}, fmt.Errorf("runAsGroup %d is set without runAsUser", *sc.runAsGroup)
	}
	u, err := users.resolve(userstr)
	if err != nil {
		return specs.User{}, err
	}
	groups := []uint32{u.GID}
	add := func(gid uint32) {
		if !slices.Contains(groups, gid) {
			groups = append(groups, gid)
		}
	}
	for _, g := range users.memberOf(u.name) {
		add(g)
	}
	if p := pod.Spec.SecurityContext; p != nil {
		if p.FSGroup != nil {
			add(uint32(*p.FSGroup))
		}
		for _, g := range p.SupplementalGroups {
			add(uint32(g))
		}
	}
	return specs.User{UID: u.UID, GID: u.GID, AdditionalGids: groups}, nil
}

// capabilities: containerd's default set, less drop (ALL: every one), plus add (ALL: every one).
func capabilities(c *corev1.Container) ([]string, error) {
	set := slices.Clone(defaultCapabilities)
	if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil {
		return set, nil
	}
	normalize := func(names []corev1.Capability) ([]string, bool, error) {
		var out []string
		for _, n := range names {
			name := strings.ToUpper(string(n))
			if name == "ALL" {
				return nil, true, nil
			}
			if !strings.HasPrefix(name, "CAP_") {
				name = "CAP_" + name
			}
			if !slices.Contains(allCapabilities, name) {
				return nil, false, configError{fmt.Errorf("container %s: capability %q is not a Linux capability", c.Name, n)}
			}
			out = append(out, name)
		}
		return out, false, nil
	}
	drop, dropAll, err := normalize(c.SecurityContext.Capabilities.Drop)
	if err != nil {
		return nil, err
	}
	add, addAll, err := normalize(c.SecurityContext.Capabilities.Add)
	if err != nil {
		return nil, err
	}
	if dropAll {
		set = nil
	}
	set = slices.DeleteFunc(set, func(s string) bool { return slices.Contains(drop, s) })
	if addAll {
		set = slices.Clone(allCapabilities)
	}
	for _, a := range add {
		if !slices.Contains(set, a) {
			set = append(set, a)
		}
	}
	slices.Sort(set)
	return set, nil
}

// resources: the memory limit, CPU shares from the request and a CFS quota from the limit, as
// the kubelet sets them; every device denied but those a runtime always allows.
func resources(c *corev1.Container) *specs.LinuxResources {
	r := &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		limit := q.Value()
		r.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	shares := uint64(minShares)
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		shares = max(uint64(q.MilliValue())*1024/1000, minShares)
	}
	r.CPU = &specs.LinuxCPU{Shares: &shares}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		quota := max(q.MilliValue()*cpuPeriod/1000, minQuota)
		period := uint64(cpuPeriod)
		r.CPU.Quota, r.CPU.Period = &quota, &period
	}
	return r
}

// containerRuntimeMounts: a runtime's own mounts, the files it binds over the image, then the
// volumes, parents before children. A volume at a path the runtime would bind wins.
func containerRuntimeMounts(volumes []mountSpec, files map[string]string) []specs.Mount {
	mounts := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	taken := map[string]bool{}
	for _, v := range volumes {
		taken[path.Clean(v.Target)] = true
	}
	targets := make([]string, 0, len(files))
	for target := range files {
		targets = append(targets, target)
	}
	slices.Sort(targets)
	for _, target := range targets {
		if !taken[target] {
			mounts = append(mounts, specs.Mount{Destination: target, Type: "bind", Source: files[target], Options: []string{"rbind", "rprivate"}})
		}
	}
	for _, v := range sortMounts(volumes) {
		options := []string{"rbind", "rprivate"}
		if v.ReadOnly {
			options = append(options, "ro")
		}
		mounts = append(mounts, specs.Mount{Destination: path.Clean(v.Target), Type: "bind", Source: v.Source, Options: options})
	}
	return mounts
}

// userDB is what an image's /etc/passwd and /etc/group say.
type userDB struct {
	users  []passwdEntry
	groups []groupEntry
}

type passwdEntry struct {
	name     string
	uid, gid uint32
}

type groupEntry struct {
	name    string
	gid     uint32
	members []string
}

type resolvedUser struct {
	specs.User
	name string // "" for a uid /etc/passwd does not list
}

func parseUserDB(passwd, group []byte) userDB {
	var db userDB
	eachLine := func(data []byte, fields int, f func([]string)) {
		s := bufio.NewScanner(bytes.NewReader(data))
		for s.Scan() {
			line := strings.TrimSpace(s.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if parts := strings.Split(line, ":"); len(parts) >= fields {
				f(parts)
			}
		}
	}
	eachLine(passwd, 4, func(p []string) {
		uid, err1 := strconv.ParseUint(p[2], 10, 32)
		gid, err2 := strconv.ParseUint(p[3], 10, 32)
		if err1 == nil && err2 == nil {
			db.users = append(db.users, passwdEntry{name: p[0], uid: uint32(uid), gid: uint32(gid)})
		}
	})
	eachLine(group, 4, func(p []string) {
		gid, err := strconv.ParseUint(p[2], 10, 32)
		if err != nil {
			return
		}
		var members []string
		if p[3] != "" {
			members = strings.Split(p[3], ",")
		}
		db.groups = append(db.groups, groupEntry{name: p[0], gid: uint32(gid), members: members})
	})
	return db
}

// resolve reads USER[:GROUP], each a number or a name; a user alone takes its passwd group.
func (db userDB) resolve(userstr string) (resolvedUser, error) {
	userPart, groupPart, hasGroup := strings.Cut(userstr, ":")
	var u resolvedUser
	if userPart == "" {
		userPart = "0"
	}
	if uid, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(uid)
		for _, e := range db.users {
			if e.uid == u.UID {
				u.name, u.GID = e.name, e.gid
				break
			}
		}
	} else {
		i := slices.IndexFunc(db.users, func(e passwdEntry) bool { return e.name == userPart })
		if i < 0 {
			return u, fmt.Errorf("user %q is not in the image's /etc/passwd", userPart)
		}
		u.name, u.UID, u.GID = userPart, db.users[i].uid, db.users[i].gid
	}
	if !hasGroup {
		return u, nil
	}
	if gid, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
		u.GID = uint32(gid)
		return u, nil
	}
	i := slices.IndexFunc(db.groups, func(g groupEntry) bool { return g.name == groupPart })
	if i < 0 {
		return u, fmt.Errorf("group %q is not in the image's /etc/group", groupPart)
	}
	u.GID = db.groups[i].gid
	return u, nil
}

// memberOf lists the groups /etc/group names the user in.
func (db userDB) memberOf(name string) []uint32 {
	var gids []uint32
	if name == "" {
		return nil
	}
	for _, g := range db.groups {
		if slices.Contains(g.members, name) {
			gids = append(gids, g.gid)
		}
	}
	return gids
}
