package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestApplyLayerWhiteoutsAndLinks(t *testing.T) {
	root := t.TempDir()
	layers := [][]byte{
		tarball(t, "a/", "a/b=lower b", "a/c=lower c", "d=lower d", "e/", "e/old=old", "e/keep/", "e/keep/old=old"),
		tarball(t,
			"a/.wh.b",          // removes a lower file
			".wh.d",            // at the top too
			"e/.wh..wh..opq",   // hides what lower layers put in e/ ...
			"e/new=new",        // ... but not what this layer puts there,
			"e/keep/mine=mine", // even below a folder it does not list
			"f=>a/c",           // a hard link to a lower file
			"g->a/c",           // a symlink
			"a/c=upper c",      // a file replaced
			"../../escape=x",   // names cannot leave the root ...
			"up->/",            // ... nor symlinks lead out of it
			"up/through-link=x"),
	}
	for _, layer := range layers {
		if err := applyLayer(root, bytes.NewReader(layer)); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	gone := func(name string) bool {
		_, err := os.Lstat(filepath.Join(root, name))
		return errors.Is(err, os.ErrNotExist)
	}
	for name, want := range map[string]string{
		"a/c": "upper c", "e/new": "new", "e/keep/mine": "mine", "escape": "x", "through-link": "x", "f": "lower c",
	} {
		if got := read(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"a/b", "d", "e/old", "e/keep/old"} {
		if !gone(name) {
			t.Errorf("%s survived its whiteout", name)
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "g")); err != nil || target != "a/c" {
		t.Errorf("g: %q, %v", target, err)
	}
	// The hard link was made before a/c was replaced: it keeps the lower file's inode.
	var f, c syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "f"), &f); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(filepath.Join(root, "a/c"), &c); err != nil {
		t.Fatal(err)
	}
	if f.Ino == c.Ino {
		t.Errorf("f shares the inode of the new a/c")
	}
	if !gone("../escape") {
		t.Errorf("an entry was written outside the root")
	}
}
