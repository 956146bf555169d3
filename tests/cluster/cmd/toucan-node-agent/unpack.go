package main

// The cache of unpacked images: each image's layers are applied once per manifest digest into a
// folder that every container of that image shares read-only (the lower layer of its overlayfs
// root), across pods, agents and clusters of this machine. A manifest digest names its layers
// exactly, so an entry never goes stale; a new build of an image is a new digest and a new entry.

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	// In a layer, this entry hides everything lower layers put in its folder.
	opaqueWhiteout = ".wh..wh..opq"
)

// imageCache is a folder of unpacked images: DIGEST-ALGORITHM-HEX/ is one image's root
// filesystem, DIGEST-ALGORITHM-HEX.lock its lock. Unpacking takes the lock exclusively, so two
// pods (or two clusters) starting one image unpack it once; a container holds it shared while it
// runs, so that pruning never takes an image from under a running container.
type imageCache struct {
	dir string
}

// acquire returns an image's root filesystem, unpacking it first if it is not in the cache, and
// the lock that keeps it there until closed.
func (c imageCache) acquire(img storedImage, m ocispec.Manifest) (string, *os.File, error) {
	key := img.manifest.Digest.Algorithm().String() + "-" + img.manifest.Digest.Encoded()
	final := filepath.Join(c.dir, key)
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return "", nil, err
	}
	lock, err := os.OpenFile(final+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", nil, err
	}
	if err := c.acquireLocked(img, m, final, lock); err != nil {
		lock.Close()
		return "", nil, err
	}
	// Its time says when it was last used, for pruning.
	now := time.Now()
	_ = os.Chtimes(final, now, now)
	return final, lock, nil
}

func (c imageCache) acquireLocked(img storedImage, m ocispec.Manifest, final string, lock *os.File) error {
	fd := int(lock.Fd())
	if err := unix.Flock(fd, unix.LOCK_SH); err != nil {
		return fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	// Entries appear by rename when complete: one that exists is whole.
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(final); err != nil {
		if err := unpackImage(img, m, final); err != nil {
			return err
		}
	}
	return unix.Flock(fd, unix.LOCK_SH)
}

func unpackImage(img storedImage, m ocispec.Manifest, final string) error {
	started := time.Now()
	partial := final + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return err
	}
	if err := os.Mkdir(partial, 0o755); err != nil {
		return err
	}
	for _, layer := range m.Layers {
		if err := applyLayerBlob(partial, img.layout, layer); err != nil {
			_ = os.RemoveAll(partial)
			return fmt.Errorf("unpacking image %s: layer %s: %w", img.ref, layer.Digest, err)
		}
	}
	if err := os.Rename(partial, final); err != nil {
		return err
	}
	log.Printf("unpacked image %s (%s, %d layers) into %s in %s", img.ref, img.manifest.Digest, len(m.Layers), final, time.Since(started).Round(time.Millisecond))
	return nil
}

// prune removes the images no container has used for unusedFor, skipping those in use.
func (c imageCache) prune(unusedFor time.Duration) {
	locks, _ := filepath.Glob(filepath.Join(c.dir, "*.lock"))
	for _, lockPath := range locks {
		final := strings.TrimSuffix(lockPath, ".lock")
		info, err := os.Stat(final)
		if err == nil && time.Since(info.ModTime()) < unusedFor {
			continue
		}
		lock, err := os.OpenFile(lockPath, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		// The lock file stays: another agent may be about to lock it.
		if unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if err := errors.Join(os.RemoveAll(final), os.RemoveAll(final+".partial")); err != nil {
				log.Printf("pruning the image cache: %v", err)
			} else if info != nil {
				log.Printf("pruned %s from the image cache: unused since %s", filepath.Base(final), info.ModTime().UTC().Format(time.RFC3339))
			}
		}
		lock.Close()
	}
}

// applyLayerBlob applies one layer of a layout, checking its digest as it reads it.
func applyLayerBlob(root, layout string, layer ocispec.Descriptor) error {
	path, err := blobPath(layout, layer.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	verifier := layer.Digest.Verifier()
	blob := io.TeeReader(f, verifier)
	var tarStream io.Reader
	switch layer.MediaType {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerNonDistributable: //nolint:staticcheck // still written by some tools
		tarStream = blob
	case ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // as above
		"application/vnd.docker.image.rootfs.diff.tar.gzip":
		gz, err := gzip.NewReader(blob)
		if err != nil {
			return err
		}
		defer gz.Close()
		tarStream = gz
	default:
		return fmt.Errorf("media type %q is not supported (uncompressed or gzip layers only)", layer.MediaType)
	}
	if err := applyLayer(root, tarStream); err != nil {
		return err
	}
	// The digest covers the whole blob, including what follows the tar's end.
	if _, err := io.Copy(io.Discard, blob); err != nil {
		return err
	}
	if !verifier.Verified() {
		return fmt.Errorf("blob %s does not match its digest", path)
	}
	return nil
}

// applyLayer applies a layer's tar stream onto root, whiteouts included, never writing outside
// root whatever the names and links in the stream say.
func applyLayer(root string, r io.Reader) error {
	tr := tar.NewReader(r)
	// What this layer wrote: its opaque whiteouts hide what lower layers put there, not this.
	written := map[string]bool{}
	var opaque []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + hdr.Name)
		if name == "/" {
			continue
		}
		dir, base := filepath.Split(name)
		parent, err := securejoin.SecureJoin(root, dir)
		if err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		switch {
		case base == opaqueWhiteout:
			opaque = append(opaque, parent)
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			if err := os.RemoveAll(filepath.Join(parent, strings.TrimPrefix(base, whiteoutPrefix))); err != nil {
				return err
			}
			continue
		}
		// Layers may leave out the folders above an entry.
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		path := filepath.Join(parent, base)
		if err := applyEntry(root, path, hdr, tr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
		// Its folders too, listed or not: an opaque folder above keeps them.
		for p := path; len(p) > len(root) && !written[p]; p = filepath.Dir(p) {
			written[p] = true
		}
	}
	for _, dir := range opaque {
		if err := removeLower(dir, written); err != nil {
			return err
		}
	}
	return nil
}

// removeLower empties dir of what this layer did not write.
func removeLower(dir string, written map[string]bool) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case written[path] && e.IsDir():
			if err := removeLower(path, written); err != nil {
				return err
			}
		case written[path]:
		default:
			if err := os.RemoveAll(path); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyEntry(root, path string, hdr *tar.Header, content io.Reader) error {
	// What lower layers had at this path is replaced, except a folder by a folder.
	if fi, err := os.Lstat(path); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
		if err := os.RemoveAll(path); err != nil {
			return err
		}
	}
	isRoot := os.Geteuid() == 0
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeReg:
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, content)
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, path); err != nil {
			return err
		}
	case tar.TypeLink:
		dir, base := filepath.Split(filepath.Clean("/" + hdr.Linkname))
		parent, err := securejoin.SecureJoin(root, dir)
		if err != nil {
			return err
		}
		// A hard link shares its target's inode: owner, mode and times are already right.
		return os.Link(filepath.Join(parent, base), path)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if !isRoot {
			return nil
		}
		mode := uint32(hdr.Mode & 0o7777)
		switch hdr.Typeflag {
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		default:
			mode |= unix.S_IFIFO
		}
		if err := unix.Mknod(path, mode, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))); err != nil {
			return err
		}
	default:
		// Global headers and other metadata entries carry no file.
		return nil
	}
	// Owner first: chown clears the set-id bits the mode then sets.
	if isRoot {
		if err := os.Lchown(path, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := os.Chmod(path, hdr.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return err
		}
	}
	for key, value := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(key, "SCHILY.xattr."); ok {
			if err := unix.Lsetxattr(path, attr, []byte(value), 0); err != nil && !errors.Is(err, unix.ENOTSUP) && (isRoot || !errors.Is(err, unix.EPERM)) {
				return fmt.Errorf("extended attribute %s: %w", attr, err)
			}
		}
	}
	if hdr.Typeflag == tar.TypeDir {
		// Entries added below would change a folder's times again.
		return nil
	}
	times := []unix.Timespec{unix.NsecToTimespec(hdr.AccessTime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if hdr.AccessTime.IsZero() {
		times[0] = times[1]
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, times, unix.AT_SYMLINK_NOFOLLOW)
}
