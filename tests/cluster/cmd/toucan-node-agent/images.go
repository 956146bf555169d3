package main

// The image store of container mode: OCI image layouts on this machine, never a registry. A
// pod's image reference resolves to the manifest that a layout's index.json names with the
// annotation org.opencontainers.image.ref.name, both sides normalized as a container runtime
// normalizes references (busybox, library/busybox:latest and docker.io/library/busybox:latest
// are one image), or, for NAME@sha256:..., to the manifest of that digest.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's media types, which some tools still write into OCI layouts.
const (
	dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	dockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
)

// pullError: the image is not in the store or cannot be read from it. The container waits with
// ErrImagePull, then ImagePullBackOff, and the agent looks again, as a kubelet pulls again.
type pullError struct{ err error }

func (e pullError) Error() string { return e.err.Error() }
func (e pullError) Unwrap() error { return e.err }

// invalidImageError: the pod's image is no valid reference; the container waits with
// InvalidImageName, as a kubelet's does.
type invalidImageError struct{ err error }

func (e invalidImageError) Error() string { return e.err.Error() }

// imageRef is a normalized image reference.
type imageRef struct {
	// name is the familiar form with its tag: busybox:latest, toucan/worker:0.1.0-cpu.
	name string
	// digest is set for NAME@DIGEST references, which match by manifest digest alone.
	digest digest.Digest
}

func (r imageRef) String() string {
	if r.digest != "" {
		return r.name + "@" + r.digest.String()
	}
	return r.name
}

func parseImageRef(s string) (imageRef, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("image reference %q: %w", s, err)
	}
	if c, ok := named.(reference.Canonical); ok {
		return imageRef{name: reference.FamiliarName(named), digest: c.Digest()}, nil
	}
	return imageRef{name: reference.FamiliarString(reference.TagNameOnly(named))}, nil
}

// imageStore lists where images are. Each entry is an OCI layout, or a folder whose subfolders
// are OCI layouts; all are read again on every lookup, so an image added while the cluster runs
// is found, and an entry that does not exist (yet) is skipped.
type imageStore struct {
	paths []string
}

func (s imageStore) String() string {
	if len(s.paths) == 0 {
		return "an empty image store"
	}
	return "the image store " + strings.Join(s.paths, ":")
}

// storedImage is an image found in a layout: the manifest for this machine's platform.
type storedImage struct {
	ref      imageRef
	layout   string
	manifest ocispec.Descriptor
}

// layouts lists the OCI layouts of the store, in its order.
func (s imageStore) layouts() []string {
	var out []string
	for _, p := range s.paths {
		if isLayout(p) {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if sub := filepath.Join(p, e.Name()); e.IsDir() && isLayout(sub) {
				out = append(out, sub)
			}
		}
	}
	return out
}

func isLayout(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, ocispec.ImageIndexFile))
	return err == nil
}

// find resolves a pod's image reference; a pullError when no layout has it.
func (s imageStore) find(image string) (storedImage, error) {
	ref, err := parseImageRef(image)
	if err != nil {
		return storedImage{}, invalidImageError{err}
	}
	for _, layout := range s.layouts() {
		index, err := readIndex(filepath.Join(layout, ocispec.ImageIndexFile))
		if err != nil {
			return storedImage{}, pullError{err}
		}
		desc, ok := findManifest(index, ref)
		if !ok {
			continue
		}
		manifest, err := platformManifest(layout, desc, ref)
		if err != nil {
			return storedImage{}, pullError{err}
		}
		return storedImage{ref: ref, layout: layout, manifest: manifest}, nil
	}
	return storedImage{}, pullError{fmt.Errorf("image %q (%s) is in none of the OCI layouts of %s", image, ref, s)}
}

// findManifest picks the entry of an index that a reference names.
func findManifest(index ocispec.Index, ref imageRef) (ocispec.Descriptor, bool) {
	for _, d := range index.Manifests {
		if ref.digest != "" {
			if d.Digest == ref.digest {
				return d, true
			}
			continue
		}
		name, ok := d.Annotations[ocispec.AnnotationRefName]
		if !ok {
			continue
		}
		if named, err := parseImageRef(name); err == nil && named.digest == "" && named.name == ref.name {
			return d, true
		}
	}
	return ocispec.Descriptor{}, false
}

// platformManifest follows a multi-platform index to the manifest for this machine.
func platformManifest(layout string, d ocispec.Descriptor, ref imageRef) (ocispec.Descriptor, error) {
	for depth := 0; ; depth++ {
		switch d.MediaType {
		case ocispec.MediaTypeImageManifest, dockerManifest:
			return d, nil
		case ocispec.MediaTypeImageIndex, dockerManifestList:
		default:
			return d, fmt.Errorf("image %s in %s: manifest %s has media type %q, not an image manifest or index", ref, layout, d.Digest, d.MediaType)
		}
		if depth == 2 {
			return d, fmt.Errorf("image %s in %s: indexes nested too deep", ref, layout)
		}
		data, err := readBlob(layout, d)
		if err != nil {
			return d, err
		}
		var index ocispec.Index
		if err := json.Unmarshal(data, &index); err != nil {
			return d, fmt.Errorf("image %s in %s: index %s: %w", ref, layout, d.Digest, err)
		}
		next, ok := pickPlatform(index)
		if !ok {
			return d, fmt.Errorf("image %s in %s has no manifest for linux/%s", ref, layout, runtime.GOARCH)
		}
		d = next
	}
}

func pickPlatform(index ocispec.Index) (ocispec.Descriptor, bool) {
	for _, d := range index.Manifests {
		if p := d.Platform; p == nil || (p.OS == "linux" && p.Architecture == runtime.GOARCH) {
			return d, true
		}
	}
	return ocispec.Descriptor{}, false
}

func readIndex(path string) (ocispec.Index, error) {
	var index ocispec.Index
	data, err := os.ReadFile(path)
	if err != nil {
		return index, err
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return index, fmt.Errorf("reading %s: %w", path, err)
	}
	return index, nil
}

func blobPath(layout string, d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob digest %q in %s: %w", d, layout, err)
	}
	return filepath.Join(layout, ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()), nil
}

// readBlob reads a small blob (an index, a manifest, a config) and checks its digest.
func readBlob(layout string, d ocispec.Descriptor) ([]byte, error) {
	path, err := blobPath(layout, d.Digest)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s is missing from %s", d.Digest, layout)
	}
	if err != nil {
		return nil, err
	}
	if got := d.Digest.Algorithm().FromBytes(data); got != d.Digest {
		return nil, fmt.Errorf("blob %s in %s has digest %s", d.Digest, layout, got)
	}
	return data, nil
}

// read reads the image's manifest and config.
func (img storedImage) read() (ocispec.Manifest, ocispec.Image, error) {
	var m ocispec.Manifest
	var config ocispec.Image
	data, err := readBlob(img.layout, img.manifest)
	if err != nil {
		return m, config, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, config, fmt.Errorf("image %s: manifest %s: %w", img.ref, img.manifest.Digest, err)
	}
	data, err = readBlob(img.layout, m.Config)
	if err != nil {
		return m, config, err
	}
	if err := json.Unmarshal(data, &config); err != nil {
		return m, config, fmt.Errorf("image %s: config %s: %w", img.ref, m.Config.Digest, err)
	}
	return m, config, nil
}
