package main

// Volumes: each is a folder on this machine (under the pod's folder, or a host path), bound at
// its mount paths inside each container's mount namespace by the container-init helper.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
	"k8s.io/utils/ptr"
)

const (
	defaultFileMode = 0o644
	// The token lifetime the kubelet asks for when a projection names none.
	defaultTokenSeconds = 3600
)

// prepareVolumes makes every volume of the pod and returns the host folder (or file) of each.
func (w *podWorker) prepareVolumes(ctx context.Context, pod *corev1.Pod) (map[string]string, error) {
	objects := w.newObjectCache(ctx)
	paths := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(w.dir, "volumes", v.Name)
		path, err := w.prepareVolume(ctx, objects, pod, v, dir)
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		paths[v.Name] = path
	}
	return paths, nil
}

func (w *podWorker) prepareVolume(ctx context.Context, objects *objectCache, pod *corev1.Pod, v corev1.Volume, dir string) (string, error) {
	src := v.VolumeSource
	switch {
	case src.EmptyDir != nil, src.Ephemeral != nil:
		return dir, mkdirWritable(dir)
	case src.HostPath != nil:
		return hostPath(src.HostPath)
	case src.PersistentVolumeClaim != nil:
		// A claim is a folder shared by every pod of the namespace that mounts it.
		shared := filepath.Join(w.a.stateDir, "claims", w.ns, src.PersistentVolumeClaim.ClaimName)
		return shared, mkdirWritable(shared)
	case src.ConfigMap != nil:
		return dir, w.writeConfigMap(objects, dir, src.ConfigMap.Name, src.ConfigMap.Optional, src.ConfigMap.Items, src.ConfigMap.DefaultMode)
	case src.Secret != nil:
		return dir, w.writeSecret(objects, dir, src.Secret.SecretName, src.Secret.Optional, src.Secret.Items, src.Secret.DefaultMode)
	case src.DownwardAPI != nil:
		return dir, w.writeDownwardAPI(pod, dir, src.DownwardAPI.Items, src.DownwardAPI.DefaultMode)
	case src.Projected != nil:
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		mode := src.Projected.DefaultMode
		for _, p := range src.Projected.Sources {
			var err error
			switch {
			case p.ServiceAccountToken != nil:
				err = w.writeToken(ctx, pod, dir, p.ServiceAccountToken, mode)
			case p.ConfigMap != nil:
				err = w.writeConfigMap(objects, dir, p.ConfigMap.Name, p.ConfigMap.Optional, p.ConfigMap.Items, mode)
			case p.Secret != nil:
				err = w.writeSecret(objects, dir, p.Secret.Name, p.Secret.Optional, p.Secret.Items, mode)
			case p.DownwardAPI != nil:
				err = w.writeDownwardAPI(pod, dir, p.DownwardAPI.Items, mode)
			default:
				err = configError{fmt.Errorf("a projected source of a kind the node agent does not support")}
			}
			if err != nil {
				return "", err
			}
		}
		return dir, nil
	}
	return "", configError{fmt.Errorf("a volume type the node agent does not support (it has emptyDir, hostPath, persistentVolumeClaim, configMap, secret, downwardAPI and projected)")}
}

// mkdirWritable makes a folder any user may write, as the kubelet makes an emptyDir: a container
// running as another user than the agent writes there too.
func mkdirWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	return os.Chmod(dir, 0o777)
}

func hostPath(h *corev1.HostPathVolumeSource) (string, error) {
	t := corev1.HostPathUnset
	if h.Type != nil {
		t = *h.Type
	}
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		return h.Path, os.MkdirAll(h.Path, 0o755)
	case corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(h.Path), 0o755); err != nil {
			return "", err
		}
		f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return "", err
		}
		return h.Path, f.Close()
	case corev1.HostPathUnset:
		return h.Path, nil
	}
	if _, err := os.Stat(h.Path); err != nil {
		return "", configError{err}
	}
	return h.Path, nil
}

// writeFile writes one projected file; rel is checked to stay inside dir.
func writeFile(dir, rel string, data []byte, mode *int32, defaultMode *int32) error {
	clean := filepath.Clean(rel)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return configError{fmt.Errorf("path %q leaves the volume", rel)}
	}
	perm := os.FileMode(defaultFileMode)
	if defaultMode != nil {
		perm = os.FileMode(*defaultMode)
	}
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	path := filepath.Join(dir, clean)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, data, perm); err != nil {
		return err
	}
	return os.Chmod(path, perm)
}

func writeItems(dir string, data map[string][]byte, items []corev1.KeyToPath, defaultMode *int32, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			if err := writeFile(dir, k, v, nil, defaultMode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, item := range items {
		v, ok := data[item.Key]
		if !ok {
			return configError{fmt.Errorf("%s has no key %q", what, item.Key)}
		}
		if err := writeFile(dir, item.Path, v, item.Mode, defaultMode); err != nil {
			return err
		}
	}
	return nil
}

func (w *podWorker) writeConfigMap(objects *objectCache, dir, name string, optional *bool, items []corev1.KeyToPath, mode *int32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cm, err := objects.configMap(name, optional)
	if err != nil || cm == nil {
		return err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return writeItems(dir, data, items, mode, fmt.Sprintf("configmap %q", name))
}

func (w *podWorker) writeSecret(objects *objectCache, dir, name string, optional *bool, items []corev1.KeyToPath, mode *int32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s, err := objects.secret(name, optional)
	if err != nil || s == nil {
		return err
	}
	return writeItems(dir, s.Data, items, mode, fmt.Sprintf("secret %q", name))
}

func (w *podWorker) writeDownwardAPI(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, mode *int32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, item := range items {
		var value string
		var err error
		switch {
		case item.FieldRef != nil:
			value, err = w.podField(pod, item.FieldRef.FieldPath)
		case item.ResourceFieldRef != nil:
			value, err = w.resourceField(pod, item.ResourceFieldRef.ContainerName, item.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		if err := writeFile(dir, item.Path, []byte(value), item.Mode, mode); err != nil {
			return err
		}
	}
	return nil
}

// writeToken asks the TokenRequest API for a token bound to this pod, as the kubelet does.
func (w *podWorker) writeToken(ctx context.Context, pod *corev1.Pod, dir string, p *corev1.ServiceAccountTokenProjection, mode *int32) error {
	seconds := int64(defaultTokenSeconds)
	if p.ExpirationSeconds != nil {
		seconds = *p.ExpirationSeconds
	}
	var audiences []string
	if p.Audience != "" {
		audiences = []string{p.Audience}
	}
	account := pod.Spec.ServiceAccountName
	if account == "" {
		account = "default"
	}
	token, err := w.a.client.CoreV1().ServiceAccounts(w.ns).CreateToken(ctx, account, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: ptr.To(seconds),
			BoundObjectRef: &authenticationv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("requesting a token for service account %s: %w", account, err)
	}
	return writeFile(dir, p.Path, []byte(token.Status.Token), nil, mode)
}

// containerMounts lists the binds of one container: its volume mounts, and its termination-message
// file at terminationMessagePath.
func containerMounts(c *corev1.Container, volumes map[string]string, env map[string]string, terminationLog string) ([]mountSpec, error) {
	var mounts []mountSpec
	for _, m := range c.VolumeMounts {
		source, ok := volumes[m.Name]
		if !ok {
			return nil, configError{fmt.Errorf("volume mount %s names no volume of the pod", m.Name)}
		}
		sub := m.SubPath
		if m.SubPathExpr != "" {
			sub = expansion.Expand(m.SubPathExpr, expansion.MappingFuncFor(env))
		}
		if sub != "" {
			clean := filepath.Clean(sub)
			if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
				return nil, configError{fmt.Errorf("subPath %q leaves volume %s", sub, m.Name)}
			}
			source = filepath.Join(source, clean)
			if _, err := os.Stat(source); os.IsNotExist(err) {
				if err := mkdirWritable(source); err != nil {
					return nil, err
				}
			}
		}
		mounts = append(mounts, mountSpec{Source: source, Target: m.MountPath, ReadOnly: m.ReadOnly})
	}
	if c.TerminationMessagePath != "" {
		mounts = append(mounts, mountSpec{Source: terminationLog, Target: c.TerminationMessagePath, Optional: true})
	}
	return mounts, nil
}
