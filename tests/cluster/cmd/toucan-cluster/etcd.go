package main

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

const etcdStartTimeout = 60 * time.Second

// embeddedEtcd is a single-member etcd in this process, on loopback, with fsync off: its data
// is thrown away with the cluster.
type embeddedEtcd struct {
	server    *embed.Etcd
	clientURL string
}

func startEtcd(dataDir string, clientPort, peerPort int) (*embeddedEtcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "toucan-test"
	cfg.Dir = dataDir
	client := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(clientPort)}
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(peerPort)}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.LogLevel = "error"
	// Scale tests write many pods: keep history short and the database small.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"
	cfg.QuotaBackendBytes = 8 << 30

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-server.Server.ReadyNotify():
	case <-time.After(etcdStartTimeout):
		server.Close()
		return nil, fmt.Errorf("etcd did not become ready within %s", etcdStartTimeout)
	}
	return &embeddedEtcd{server: server, clientURL: client.String()}, nil
}

func (e *embeddedEtcd) errors() <-chan error { return e.server.Err() }

func (e *embeddedEtcd) stop() { e.server.Close() }
