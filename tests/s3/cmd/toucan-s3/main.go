// Command toucan-s3 runs one throwaway S3 server for tests, on loopback and under one folder:
// the Versity S3 Gateway (github.com/versity/versitygw, embedded in this process through its
// embedgw package) over its posix backend, so every bucket is a folder of DIR/data and every
// object a file in it.
//
// It makes the credentials (kept in DIR/credentials, so a restart keeps them), serves on a free
// port, creates the bucket --bucket through the S3 API with a signed request (which also proves
// the server answers), writes DIR/env (the AWS_* variables a client needs) and DIR/ready, and
// then watches. It stops on SIGTERM or SIGINT, when DIR/env disappears, when the process named by
// --owner-pid exits, or when --ttl has passed: a test server never outlives its test by long.
//
// tests/s3/up starts it and tests/s3/down stops it; see tests/s3/README.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/embedgw"
)

const (
	region = "us-east-1"
	// The S3 API answers within this long of the start, or the start failed.
	readyTimeout = 30 * time.Second
	// The gateway's own defaults (versitygw --max-connections, --max-requests, --mp-max-parts).
	maxConnections    = 250000
	maxRequests       = 100000
	multipartMaxParts = 10000
)

type options struct {
	dir      string
	bucket   string
	prefix   string
	ownerPID int
	ttl      time.Duration
}

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix("toucan-s3: ")

	var o options
	flag.StringVar(&o.dir, "dir", "", "the server's folder: data, credentials, DIR/env (required)")
	flag.StringVar(&o.bucket, "bucket", "toucan", "the bucket to create")
	flag.StringVar(&o.prefix, "prefix", "ci", "the key prefix TOUCAN_TEST_S3_ARTIFACTS names in DIR/env")
	flag.IntVar(&o.ownerPID, "owner-pid", 0, "stop when this process exits (0: no owner)")
	flag.DurationVar(&o.ttl, "ttl", 3*time.Hour, "stop after this long whatever happens (0: never)")
	flag.Parse()
	if o.dir == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		log.Print(err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, o); err != nil {
		log.Printf("stopped: %v", err)
		_ = os.WriteFile(filepath.Join(o.dir, "failed"), []byte(err.Error()+"\n"), 0o644)
		os.Exit(1)
	}
	log.Print("stopped")
}

// run starts the gateway, waits until something asks it to stop, and stops it.
func run(ctx context.Context, o options) error {
	started := time.Now()
	dataDir := filepath.Join(o.dir, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	for _, stale := range []string{"ready", "failed", "env"} {
		_ = os.Remove(filepath.Join(o.dir, stale))
	}
	pidFile := filepath.Join(o.dir, "toucan-s3.pid")
	if err := os.WriteFile(pidFile, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	access, secret, err := credentialsOf(o.dir)
	if err != nil {
		return fmt.Errorf("making the credentials: %w", err)
	}
	be, err := posixBackend(o.dir, dataDir)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)

	gwCtx, stopGateway := context.WithCancel(context.Background())
	defer stopGateway()
	gw := &gateway{done: make(chan struct{})}
	go func() {
		defer close(gw.done)
		gw.err = embedgw.RunVersityGW(gwCtx, be, &embedgw.Config{
			RootUserAccess:    access,
			RootUserSecret:    secret,
			Region:            region,
			Ports:             []string{"127.0.0.1:" + strconv.Itoa(port)},
			MaxConnections:    maxConnections,
			MaxRequests:       maxRequests,
			MultipartMaxParts: multipartMaxParts,
			KeepAlive:         true,
		})
	}()
	// The gateway shuts down gracefully when its context ends; wait for that on every return.
	defer func() {
		stopGateway()
		<-gw.done
		if gw.err != nil && !errors.Is(gw.err, context.Canceled) {
			log.Printf("the gateway stopped with: %v", gw.err)
		}
	}()

	if err := createBucket(ctx, gw, endpoint, access, secret, o.bucket); err != nil {
		return err
	}
	envFile := filepath.Join(o.dir, "env")
	env := strings.Join([]string{
		"AWS_ACCESS_KEY_ID=" + access,
		"AWS_SECRET_ACCESS_KEY=" + secret,
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_REGION=" + region,
		"AWS_ALLOW_HTTP=true",
		"TOUCAN_TEST_S3_ARTIFACTS=s3://" + o.bucket + "/" + o.prefix,
	}, "\n") + "\n"
	if err := writeAtomic(envFile, []byte(env), 0o600); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(o.dir, "ready"), []byte(endpoint+"\n"), 0o644); err != nil {
		return err
	}
	log.Printf("S3 ready in %s at %s (bucket %s)", time.Since(started).Round(time.Millisecond), endpoint, o.bucket)

	return watch(ctx, o, gw, envFile)
}

// gateway is the embedded gateway's outcome: done closes when it has returned, with err.
type gateway struct {
	done chan struct{}
	err  error
}

// watch returns nil when asked to stop and an error when the gateway failed.
func watch(ctx context.Context, o options, gw *gateway, envFile string) error {
	var deadline <-chan time.Time
	if o.ttl > 0 {
		deadline = time.After(o.ttl)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Print("signalled: stopping")
			return nil
		case <-deadline:
			log.Printf("the time to live (%s) has passed: stopping", o.ttl)
			return nil
		case <-gw.done:
			return fmt.Errorf("the gateway exited on its own: %v", gw.err)
		case <-tick.C:
			if _, err := os.Stat(envFile); errors.Is(err, os.ErrNotExist) {
				log.Printf("%s is gone: stopping", envFile)
				return nil
			}
			if o.ownerPID > 0 && !processAlive(o.ownerPID) {
				log.Printf("the owner process %d has exited: stopping", o.ownerPID)
				return nil
			}
		}
	}
}

// posixBackend serves DIR/data. Object metadata (ETags, content types, user metadata) goes in
// extended attributes where the filesystem has them, as in a production posix gateway, and in
// sidecar files under DIR/meta where it does not (some tmpfs and overlay setups).
func posixBackend(dir, dataDir string) (*posix.Posix, error) {
	opts := posix.PosixOpts{}
	opts.SetNewDirPerm(0o755)
	opts.SetNewFilePerm(0o644)
	var ms meta.MetadataStorer = meta.XattrMeta{}
	if err := (meta.XattrMeta{}).Test(dataDir); err != nil {
		sidecar := filepath.Join(dir, "meta")
		if err := os.MkdirAll(sidecar, 0o755); err != nil {
			return nil, err
		}
		log.Printf("no extended attributes in %s (%v): metadata goes to %s", dataDir, err, sidecar)
		sc, err := meta.NewSideCar(sidecar)
		if err != nil {
			return nil, fmt.Errorf("sidecar metadata in %s: %w", sidecar, err)
		}
		ms = sc
		opts.SideCarDir = sidecar
	}
	be, err := posix.New(dataDir, ms, opts)
	if err != nil {
		return nil, fmt.Errorf("the posix backend on %s: %w", dataDir, err)
	}
	return be, nil
}

// createBucket creates the bucket once the gateway answers (an existing one is fine), or fails
// as soon as the gateway exits.
func createBucket(ctx context.Context, gw *gateway, endpoint, access, secret, bucket string) error {
	client := s3.New(s3.Options{
		BaseEndpoint: aws.String(endpoint),
		Region:       region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
		HTTPClient:   &http.Client{Timeout: 5 * time.Second},
	})
	deadline := time.Now().Add(readyTimeout)
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := client.CreateBucket(attempt, &s3.CreateBucketInput{Bucket: aws.String(bucket)})
		cancel()
		var owned *types.BucketAlreadyOwnedByYou
		if err == nil || errors.As(err, &owned) {
			_, err = client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(bucket)})
			if err != nil {
				return fmt.Errorf("bucket %s was created but HEAD fails: %w", bucket, err)
			}
			return nil
		}
		// An S3 error answer is final; only a server that does not answer yet is waited for.
		var refused smithy.APIError
		if errors.As(err, &refused) {
			return fmt.Errorf("creating bucket %s at %s: %w", bucket, endpoint, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("creating bucket %s at %s: no answer within %s: %w", bucket, endpoint, readyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("signalled while waiting for the gateway to answer")
		case <-gw.done:
			return fmt.Errorf("the gateway exited before it answered: %v", gw.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// credentialsOf returns the root access key and secret kept in DIR/credentials, making them on
// first use: each server has its own, and a restart from the same DIR keeps them.
func credentialsOf(dir string) (string, string, error) {
	path := filepath.Join(dir, "credentials")
	if data, err := os.ReadFile(path); err == nil {
		if fields := strings.Fields(string(data)); len(fields) == 2 {
			return fields[0], fields[1], nil
		}
	}
	keyBytes := make([]byte, 8)
	secretBytes := make([]byte, 20)
	if _, err := rand.Read(keyBytes); err != nil {
		return "", "", err
	}
	if _, err := rand.Read(secretBytes); err != nil {
		return "", "", err
	}
	access := "TOUCANTEST" + strings.ToUpper(hex.EncodeToString(keyBytes))
	secret := hex.EncodeToString(secretBytes)
	if err := writeAtomic(path, []byte(access+" "+secret+"\n"), 0o600); err != nil {
		return "", "", err
	}
	return access, secret, nil
}

// freePort asks the kernel for a free loopback port. Another process may take it before the
// gateway binds it; tests/s3/up then starts again.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
