package main

// A container's environment and command line, as the kubelet builds them: a base first (in
// process mode this agent's own environment, since the command runs on this machine as toucan's
// local runtime runs steps; in container mode nothing, the image's environment coming under it
// all), then the variables every pod gets, then envFrom, then env with the downward API and
// $(VAR) expansion.

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	resourcehelper "k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// configError is an error in the pod's configuration (a missing config map key, say); the
// container waits with reason CreateContainerConfigError until it is fixed.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }

// objectCache fetches each config map and secret once per container start.
type objectCache struct {
	ctx        context.Context
	w          *podWorker
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func (w *podWorker) newObjectCache(ctx context.Context) *objectCache {
	return &objectCache{ctx: ctx, w: w, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
}

// configMap returns nil, nil for a missing optional config map.
func (o *objectCache) configMap(name string, optional *bool) (*corev1.ConfigMap, error) {
	if cm, ok := o.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := o.w.a.client.CoreV1().ConfigMaps(o.w.ns).Get(o.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if optional != nil && *optional {
			o.configMaps[name] = nil
			return nil, nil
		}
		return nil, configError{fmt.Errorf("configmap %q not found", name)}
	}
	if err != nil {
		return nil, err
	}
	o.configMaps[name] = cm
	return cm, nil
}

// secret returns nil, nil for a missing optional secret.
func (o *objectCache) secret(name string, optional *bool) (*corev1.Secret, error) {
	if s, ok := o.secrets[name]; ok {
		return s, nil
	}
	s, err := o.w.a.client.CoreV1().Secrets(o.w.ns).Get(o.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if optional != nil && *optional {
			o.secrets[name] = nil
			return nil, nil
		}
		return nil, configError{fmt.Errorf("secret %q not found", name)}
	}
	if err != nil {
		return nil, err
	}
	o.secrets[name] = s
	return s, nil
}

// containerEnv returns the environment over base (KEY=VALUE entries) as a map and as the
// KEY=VALUE list a process takes.
func (w *podWorker) containerEnv(objects *objectCache, pod *corev1.Pod, c *corev1.Container, base []string) (map[string]string, []string, error) {
	env := map[string]string{}
	for _, kv := range base {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	hostname := pod.Name
	if pod.Spec.Hostname != "" {
		hostname = pod.Spec.Hostname
	}
	port := strconv.Itoa(w.a.apiPort)
	// In-cluster clients find the API server through these; it is on loopback here.
	for k, v := range map[string]string{
		"HOSTNAME":                      hostname,
		"KUBERNETES_SERVICE_HOST":       nodeIP,
		"KUBERNETES_SERVICE_PORT":       port,
		"KUBERNETES_SERVICE_PORT_HTTPS": port,
		"KUBERNETES_PORT":               "tcp://" + nodeIP + ":" + port,
	} {
		env[k] = v
	}

	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := objects.configMap(from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
			if err != nil {
				return nil, nil, err
			}
			if cm != nil {
				for k, v := range cm.Data {
					setEnvFrom(env, from.Prefix+k, v)
				}
			}
		case from.SecretRef != nil:
			s, err := objects.secret(from.SecretRef.Name, from.SecretRef.Optional)
			if err != nil {
				return nil, nil, err
			}
			if s != nil {
				for k, v := range s.Data {
					setEnvFrom(env, from.Prefix+k, string(v))
				}
			}
		}
	}

	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expansion.Expand(e.Value, expansion.MappingFuncFor(env))
			continue
		}
		value, ok, err := w.envValueFrom(objects, pod, c, e.ValueFrom)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			env[e.Name] = value
		}
	}

	list := make([]string, 0, len(env))
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	return env, list, nil
}

// setEnvFrom skips keys that are no valid variable names, as the kubelet does.
func setEnvFrom(env map[string]string, name, value string) {
	if len(validation.IsEnvVarName(name)) == 0 {
		env[name] = value
	}
}

// envValueFrom resolves one valueFrom; ok is false for a missing optional key.
func (w *podWorker) envValueFrom(objects *objectCache, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := w.podField(pod, from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := w.resourceField(pod, c.Name, from.ResourceFieldRef)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := objects.configMap(ref.Name, ref.Optional)
		if err != nil || cm == nil {
			return "", false, err
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if ref.Optional != nil && *ref.Optional {
			return "", false, nil
		}
		return "", false, configError{fmt.Errorf("configmap %q has no key %q", ref.Name, ref.Key)}
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		s, err := objects.secret(ref.Name, ref.Optional)
		if err != nil || s == nil {
			return "", false, err
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if ref.Optional != nil && *ref.Optional {
			return "", false, nil
		}
		return "", false, configError{fmt.Errorf("secret %q has no key %q", ref.Name, ref.Key)}
	}
	return "", false, configError{fmt.Errorf("unsupported valueFrom")}
}

// podField resolves a downward-API field path.
func (w *podWorker) podField(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.hostIPs":
		return nodeIP, nil
	case "status.podIP", "status.podIPs":
		return w.podIP, nil
	}
	v, err := fieldpath.ExtractFieldPathAsString(pod, path)
	if err != nil {
		return "", configError{err}
	}
	return v, nil
}

// resourceField resolves limits.* and requests.*; an unset limit is the node's allocatable.
func (w *podWorker) resourceField(pod *corev1.Pod, containerName string, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" {
		containerName = ref.ContainerName
	}
	allocatable := corev1.ResourceList{}
	for k, v := range w.node.Capacity {
		allocatable[k] = v
	}
	v, err := resourcehelper.ExtractResourceValueByContainerNameAndNodeAllocatable(ref, pod, containerName, allocatable)
	if err != nil {
		return "", configError{err}
	}
	return v, nil
}

// commandLine is the container's argv with $(VAR) references expanded. Without an image there is
// no entrypoint to fall back on, so a container needs a command (or args, taken as the command).
func commandLine(c *corev1.Container, env map[string]string) ([]string, error) {
	mapping := expansion.MappingFuncFor(env)
	var argv []string
	for _, s := range append(append([]string{}, c.Command...), c.Args...) {
		argv = append(argv, expansion.Expand(s, mapping))
	}
	if len(argv) == 0 {
		return nil, configError{fmt.Errorf("container %s has no command or args: the node agent runs no image entrypoint (image %q)", c.Name, c.Image)}
	}
	return argv, nil
}
