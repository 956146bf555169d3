package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseImageRef(t *testing.T) {
	sum := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		in, name, digest, wantErr string
	}{
		{in: "busybox", name: "busybox:latest"},
		{in: "library/busybox", name: "busybox:latest"},
		{in: "docker.io/library/busybox:1.36", name: "busybox:1.36"},
		{in: "toucan/worker:0.1.0-cpu", name: "toucan/worker:0.1.0-cpu"},
		{in: "docker.io/toucan/worker:cpu", name: "toucan/worker:cpu"},
		{in: "localhost:5000/toucan/worker:cpu", name: "localhost:5000/toucan/worker:cpu"},
		{in: "busybox@" + sum, name: "busybox", digest: sum},
		{in: "Busybox", wantErr: "must be lowercase"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseImageRef(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.name != tt.name || got.digest.String() != tt.digest {
				t.Fatalf("got %q @ %q, want %q @ %q", got.name, got.digest, tt.name, tt.digest)
			}
		})
	}
}

func TestFindManifest(t *testing.T) {
	entry := func(name string, n byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes([]byte{n})}
		if name != "" {
			d.Annotations = map[string]string{ocispec.AnnotationRefName: name}
		}
		return d
	}
	index := ocispec.Index{Manifests: []ocispec.Descriptor{
		entry("toucan/worker:0.1.0-cpu", 1),
		entry("docker.io/library/busybox:latest", 2),
		entry("", 3),
		entry("busybox:1.36", 4),
	}}
	tests := []struct {
		ref  string
		want int // index in index.Manifests, -1 for none
	}{
		{"toucan/worker:0.1.0-cpu", 0},
		{"docker.io/toucan/worker:0.1.0-cpu", 0},
		{"toucan/worker:cpu", -1},
		{"busybox", 1},
		{"busybox:1.36", 3},
		{"busybox:1.37", -1},
		{"anything@" + digest.FromBytes([]byte{3}).String(), 2},
		{"busybox@" + digest.FromBytes([]byte{9}).String(), -1},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			ref, err := parseImageRef(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := findManifest(index, ref)
			switch {
			case tt.want < 0 && ok:
				t.Fatalf("found %s, want none", got.Digest)
			case tt.want >= 0 && !ok:
				t.Fatalf("found none, want %s", index.Manifests[tt.want].Digest)
			case tt.want >= 0 && got.Digest != index.Manifests[tt.want].Digest:
				t.Fatalf("found %s, want %s", got.Digest, index.Manifests[tt.want].Digest)
			}
		})
	}
}

// layoutWriter writes a small OCI layout the way buildah push oci:DIR:REF does.
type layoutWriter struct {
	t   *testing.T
	dir string
}

func (l layoutWriter) blob(mediaType string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	path := filepath.Join(l.dir, "blobs", "sha256", d.Encoded())
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		l.t.Fatal(err)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (l layoutWriter) json(mediaType string, v any) ocispec.Descriptor {
	data, err := json.Marshal(v)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.blob(mediaType, data)
}

// image writes an image of gzipped layers under ref and returns its manifest's descriptor.
func (l layoutWriter) image(ref string, config ocispec.ImageConfig, layers ...[]byte) ocispec.Descriptor {
	var m ocispec.Manifest
	m.SchemaVersion = 2
	m.MediaType = ocispec.MediaTypeImageManifest
	m.Config = l.json(ocispec.MediaTypeImageConfig, ocispec.Image{Config: config})
	for _, layer := range layers {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		if _, err := gz.Write(layer); err != nil {
			l.t.Fatal(err)
		}
		if err := gz.Close(); err != nil {
			l.t.Fatal(err)
		}
		m.Layers = append(m.Layers, l.blob(ocispec.MediaTypeImageLayerGzip, buf.Bytes()))
	}
	desc := l.json(ocispec.MediaTypeImageManifest, m)
	desc.Annotations = map[string]string{ocispec.AnnotationRefName: ref}
	index, err := readIndex(filepath.Join(l.dir, ocispec.ImageIndexFile))
	if errors.Is(err, os.ErrNotExist) {
		index.SchemaVersion = 2
	} else if err != nil {
		l.t.Fatal(err)
	}
	index.Manifests = append(index.Manifests, desc)
	data, err := json.Marshal(index)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, ocispec.ImageIndexFile), data, 0o644); err != nil {
		l.t.Fatal(err)
	}
	return desc
}

// tarball is a layer: entries in order, a file's content after "=", a symlink's target after
// "->", a hard link's after "=>", a folder ending in "/".
func tarball(t *testing.T, entries ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Mode: 0o644, ModTime: time.Unix(1, 0)}
		var content string
		switch {
		case strings.Contains(e, "=>"):
			hdr.Name, hdr.Linkname, _ = strings.Cut(e, "=>")
			hdr.Typeflag = tar.TypeLink
		case strings.Contains(e, "->"):
			hdr.Name, hdr.Linkname, _ = strings.Cut(e, "->")
			hdr.Typeflag = tar.TypeSymlink
		case strings.HasSuffix(e, "/"):
			hdr.Name, hdr.Typeflag, hdr.Mode = e, tar.TypeDir, 0o755
		default:
			hdr.Name, content, _ = strings.Cut(e, "=")
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestImageStoreFindsAndUnpacks(t *testing.T) {
	tmp := t.TempDir()
	// One store entry is a layout, the other a folder of layouts.
	direct := layoutWriter{t, filepath.Join(tmp, "oci")}
	nested := layoutWriter{t, filepath.Join(tmp, "extra", "smoke")}
	direct.image("toucan/worker:0.1.0-cpu", ocispec.ImageConfig{User: "65532"}, tarball(t, "bin/", "bin/worker=w"))
	want := nested.image("busybox:latest", ocispec.ImageConfig{Cmd: []string{"sh"}},
		tarball(t, "bin/", "bin/busybox=bb", "bin/sh->busybox", "etc/", "etc/gone=x"),
		tarball(t, "etc/.wh.gone", "etc/os-release=smoke"))
	store := imageStore{paths: []string{filepath.Join(tmp, "missing"), direct.dir, filepath.Join(tmp, "extra")}}

	img, err := store.find("docker.io/library/busybox")
	if err != nil {
		t.Fatal(err)
	}
	if img.manifest.Digest != want.Digest || img.layout != nested.dir {
		t.Fatalf("found %s in %s, want %s in %s", img.manifest.Digest, img.layout, want.Digest, nested.dir)
	}
	m, config, err := img.read()
	if err != nil {
		t.Fatal(err)
	}
	if len(config.Config.Cmd) != 1 || config.Config.Cmd[0] != "sh" {
		t.Fatalf("config %+v", config.Config)
	}

	cache := imageCache{dir: filepath.Join(tmp, "cache")}
	rootfs, lease, err := cache.acquire(img, m)
	if err != nil {
		t.Fatal(err)
	}
	lease.Close()
	if data, err := os.ReadFile(filepath.Join(rootfs, "etc/os-release")); err != nil || string(data) != "smoke" {
		t.Fatalf("etc/os-release: %q, %v", data, err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc/gone")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("etc/gone survived its whiteout: %v", err)
	}
	// A second acquire takes the cached copy, even with the layer blobs gone.
	for _, l := range m.Layers {
		path, _ := blobPath(img.layout, l.Digest)
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	again, lease, err := cache.acquire(img, m)
	if err != nil || again != rootfs {
		t.Fatalf("second acquire: %q, %v", again, err)
	}
	lease.Close()

	_, err = store.find("Toucan/Worker")
	var invalid invalidImageError
	if !errors.As(err, &invalid) {
		t.Fatalf("an invalid reference gave %v, want an invalidImageError", err)
	}
	_, err = store.find("toucan/worker:cpu")
	var pullErr pullError
	if !errors.As(err, &pullErr) {
		t.Fatalf("a missing image gave %v, want a pullError", err)
	}
	for _, want := range []string{`"toucan/worker:cpu"`, direct.dir, filepath.Join(tmp, "extra")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestImageCachePruneSkipsImagesInUse(t *testing.T) {
	tmp := t.TempDir()
	layout := layoutWriter{t, filepath.Join(tmp, "oci")}
	layout.image("a:1", ocispec.ImageConfig{}, tarball(t, "a=1"))
	layout.image("b:1", ocispec.ImageConfig{}, tarball(t, "b=1"))
	store := imageStore{paths: []string{layout.dir}}
	cache := imageCache{dir: filepath.Join(tmp, "cache")}
	acquire := func(ref string) (string, *os.File) {
		img, err := store.find(ref)
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := img.read()
		if err != nil {
			t.Fatal(err)
		}
		rootfs, lease, err := cache.acquire(img, m)
		if err != nil {
			t.Fatal(err)
		}
		return rootfs, lease
	}
	inUse, lease := acquire("a:1")
	defer lease.Close()
	unused, other := acquire("b:1")
	other.Close()

	cache.prune(0)
	if _, err := os.Stat(inUse); err != nil {
		t.Fatalf("pruned an image a container holds: %v", err)
	}
	if _, err := os.Stat(unused); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("an unused image survived pruning: %v", err)
	}
}
