package main

// Pod IPs: each pod gets an address of its own on loopback, 127.B.x.y, where B is this cluster's
// and held through a lock file, so that two clusters on one machine never hand out the same
// address. Every address of 127.0.0.0/8 is local on Linux, so a pod's server can bind its IP
// without any network setup.

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

const (
	firstNetwork = 10
	lastNetwork  = 250
	// Host parts 1..65023 of 127.B.0.0/16, skipping .0 and .255 in the last byte.
	maxHostIndex = 254 * 256
)

type ipPool struct {
	network int
	lock    *os.File

	mu   sync.Mutex
	next int
	free []int
	used map[int]bool
}

func newIPPool() (*ipPool, error) {
	dir := filepath.Join(os.TempDir(), "toucan-test-cluster-pod-networks")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, err
	}
	candidates := rand.Perm(lastNetwork - firstNetwork + 1)
	for _, c := range candidates {
		network := firstNetwork + c
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(network)+".lock"), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return nil, err
		}
		// The kernel drops the lock when this process exits, however it exits.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			return nil, err
		}
		return &ipPool{network: network, lock: f, next: 1, used: map[int]bool{}}, nil
	}
	return nil, fmt.Errorf("every pod network 127.%d-%d.0.0/16 is held by another cluster", firstNetwork, lastNetwork)
}

func (p *ipPool) close() { p.lock.Close() }

func (p *ipPool) describe() string { return fmt.Sprintf("127.%d.0.0/16", p.network) }

func (p *ipPool) address(index int) string {
	return fmt.Sprintf("127.%d.%d.%d", p.network, index/254, index%254+1)
}

func (p *ipPool) allocate() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var index int
	switch {
	case len(p.free) > 0:
		index, p.free = p.free[0], p.free[1:]
	case p.next < maxHostIndex:
		index = p.next
		p.next++
	default:
		return "", fmt.Errorf("all %d pod IPs of %s are in use", maxHostIndex, p.describe())
	}
	p.used[index] = true
	return p.address(index), nil
}

func (p *ipPool) release(ip string) {
	var network, hi, lo int
	if _, err := fmt.Sscanf(ip, "127.%d.%d.%d", &network, &hi, &lo); err != nil || network != p.network {
		return
	}
	index := hi*254 + lo - 1
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used[index] {
		delete(p.used, index)
		p.free = append(p.free, index)
	}
}
