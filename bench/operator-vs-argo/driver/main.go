// bench-driver submits N pipeline runs at once to a cluster, watches their pods and the run
// objects until every run has finished, and writes what it measured as JSON. It serves both
// sides of bench/operator-vs-argo:
//
//	argo:   runs are Workflows (argoproj.io/v1alpha1); a pod's run is its
//	        workflows.argoproj.io/workflow label, its step the last dot-separated part of its
//	        workflows.argoproj.io/node-name annotation.
//	toucan: runs are PipelineRuns (toucan.dev/v1alpha1); a pod's run and step are its
//	        toucan.dev/run and toucan.dev/step labels.
//
// Every time is the local receive time of a watch event (monotonic clock), except the
// API-timestamp cross-check (creationTimestamp, container finishedAt), which has one-second
// resolution. The watches start before the first run is created.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/yaml"
)

type side struct {
	runs        schema.GroupVersionResource
	podSelector string // label selector of the side's step pods
	podRunStep  func(*corev1.Pod) (run, step string, ok bool)
}

var sides = map[string]side{
	"argo": {
		runs:        schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "workflows"},
		podSelector: "workflows.argoproj.io/workflow",
		podRunStep: func(p *corev1.Pod) (string, string, bool) {
			run := p.Labels["workflows.argoproj.io/workflow"]
			node := p.Annotations["workflows.argoproj.io/node-name"]
			if run == "" || node == "" {
				return "", "", false
			}
			return run, node[strings.LastIndex(node, ".")+1:], true
		},
	},
	"toucan": {
		runs:        schema.GroupVersionResource{Group: "toucan.dev", Version: "v1alpha1", Resource: "pipelineruns"},
		podSelector: "toucan.dev/run,toucan.dev/step",
		podRunStep: func(p *corev1.Pod) (string, string, bool) {
			run, step := p.Labels["toucan.dev/run"], p.Labels["toucan.dev/step"]
			return run, step, run != "" && step != ""
		},
	},
}

// pod is what the watch saw of one step pod.
type pod struct {
	name, run, step string
	added           time.Time // first event that showed the pod
	done            time.Time // first event that showed it Succeeded or Failed
	phase           corev1.PodPhase
	created         time.Time // metadata.creationTimestamp (seconds)
	finished        time.Time // latest container terminated.finishedAt (seconds)
}

type run struct {
	created  time.Time // when our create call returned
	done     time.Time // first event with a terminal .status.phase
	phase    string
	firstPod time.Time
}

type recorder struct {
	mu          sync.Mutex
	side        side
	prefix      string          // only runs named PREFIX-... count (an earlier warm-up run is left out)
	pods        map[string]*pod // by pod name
	runs        map[string]*run // by run name
	unlabelled  int             // pod events without the side's run and step labels
	terminalRun map[string]bool
}

func (r *recorder) pod(p *corev1.Pod, at time.Time) {
	runName, step, ok := r.side.podRunStep(p)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok {
		r.unlabelled++
		return
	}
	if !strings.HasPrefix(runName, r.prefix) {
		return
	}
	rec := r.pods[p.Name]
	if rec == nil {
		rec = &pod{name: p.Name, run: runName, step: step, added: at, created: p.CreationTimestamp.Time}
		r.pods[p.Name] = rec
		if ru := r.runs[runName]; ru != nil && (ru.firstPod.IsZero() || at.Before(ru.firstPod)) {
			ru.firstPod = at
		}
	}
	if rec.done.IsZero() && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
		rec.done = at
		rec.phase = p.Status.Phase
		for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if t := cs.State.Terminated; t != nil && t.FinishedAt.After(rec.finished) {
				rec.finished = t.FinishedAt.Time
			}
		}
	}
}

func (r *recorder) run(u *unstructured.Unstructured, at time.Time) {
	if !strings.HasPrefix(u.GetName(), r.prefix) {
		return
	}
	phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
	r.mu.Lock()
	defer r.mu.Unlock()
	ru := r.runs[u.GetName()]
	if ru == nil {
		// Created by us, but the event can beat the create call's return.
		ru = &run{}
		r.runs[u.GetName()] = ru
	}
	if ru.done.IsZero() && r.terminalRun[phase] {
		ru.done = at
		ru.phase = phase
	}
}

type watcherFunc func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error)

func (f watcherFunc) WatchWithContext(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
	return f(ctx, o)
}

// follow runs a retrying watch from resourceVersion rv and hands each object to on.
func follow(ctx context.Context, rv string, w watcherFunc, on func(obj any, at time.Time)) error {
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, rv, w)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		rw.Stop()
	}()
	go func() {
		for ev := range rw.ResultChan() {
			at := time.Now()
			switch ev.Type {
			case watch.Added, watch.Modified:
				on(ev.Object, at)
			case watch.Error:
				fmt.Fprintf(os.Stderr, "bench-driver: watch error: %v\n", ev.Object)
			}
		}
	}()
	return nil
}

// proc samples a process's memory and CPU time from /proc.
type proc struct {
	pid                  int
	startTicks, endTicks float64
	peakRSSKiB           int64
	hwmKiB               int64
}

func procTicks(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is f[0]; utime and stime are fields 14 and 15 of stat.
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return utime + stime, nil
}

func procStatusKiB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

func (p *proc) sample() {
	if rss, err := procStatusKiB(p.pid, "VmRSS"); err == nil && rss > p.peakRSSKiB {
		p.peakRSSKiB = rss
	}
	if hwm, err := procStatusKiB(p.pid, "VmHWM"); err == nil {
		p.hwmKiB = hwm
	}
	if t, err := procTicks(p.pid); err == nil {
		p.endTicks = t
	}
}

type stats struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// summarize gives nearest-rank percentiles.
func summarize(v []float64) stats {
	if len(v) == 0 {
		return stats{}
	}
	sort.Float64s(v)
	rank := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(v)))) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	return stats{Count: len(v), P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: v[len(v)-1], Mean: sum / float64(len(v))}
}

type result struct {
	Side            string  `json:"side"`
	Runs            int     `json:"runs"`
	StepsPerRun     int     `json:"stepsPerRun"`
	Succeeded       int     `json:"succeeded"`
	Failed          int     `json:"failed"`
	Unfinished      int     `json:"unfinished"`
	TimedOut        bool    `json:"timedOut"`
	SubmitSeconds   float64 `json:"submitSeconds"`   // first create call to last create returned
	MakespanSeconds float64 `json:"makespanSeconds"` // first create call to last run finished
	RunsPerMinute   float64 `json:"runsPerMinute"`   // succeeded runs / makespan
	RunSeconds      stats   `json:"runSeconds"`      // per run: created to finished
	// Step to dependent step, by watch receive times: parent seen Succeeded to child seen.
	EdgeWatchMs stats `json:"edgeWatchMs"`
	// The same edge by API timestamps: child creationTimestamp - parent finishedAt (seconds).
	EdgeAPISeconds stats `json:"edgeApiSeconds"`
	// Run created to its first step pod seen.
	FirstPodMs stats `json:"firstPodMs"`
	// Last step seen Succeeded to the run seen finished.
	FinishMs       stats   `json:"finishMs"`
	Pods           int     `json:"pods"`
	PodsFailed     int     `json:"podsFailed"`
	DuplicatePods  int     `json:"duplicatePods"`
	ControllerPID  int     `json:"controllerPid,omitempty"`
	VmHWMMiB       float64 `json:"vmHWMMiB,omitempty"`
	PeakRSSMiB     float64 `json:"peakRssMiB,omitempty"`
	CPUSeconds     float64 `json:"cpuSeconds,omitempty"` // controller user+system CPU during the makespan
	StartedAt      string  `json:"startedAt"`
	EdgesPerRun    int     `json:"edgesPerRun"`
	ControllerGone bool    `json:"controllerGone,omitempty"`
	// Pod events the selector let through without a run and a step (should stay 0).
	UnlabelledPodEvents int `json:"unlabelledPodEvents,omitempty"`
}

func main() {
	var (
		kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig")
		namespace  = flag.String("namespace", "bench", "namespace of the runs and their pods")
		sideName   = flag.String("side", "", "argo or toucan")
		template   = flag.String("template", "", "YAML of one run object; each copy gets the name PREFIX-NNNN")
		prefix     = flag.String("prefix", "run", "name prefix of the runs")
		n          = flag.Int("runs", 50, "runs to submit")
		steps      = flag.Int("steps", 10, "step pods per run")
		edgesFlag  = flag.String("edges", "", "dependency edges CHILD=PARENT, comma-separated")
		parallel   = flag.Int("parallel", 16, "concurrent create calls")
		pid        = flag.Int("pid", 0, "the controller's process id, for its memory and CPU")
		timeout    = flag.Duration("timeout", 30*time.Minute, "give up after this long")
		out        = flag.String("out", "", "write the JSON result here (and print it)")
		podsCSV    = flag.String("pods-csv", "", "write every pod's record here")
	)
	flag.Parse()
	sd, ok := sides[*sideName]
	if !ok || *template == "" {
		fmt.Fprintln(os.Stderr, "bench-driver: need --side argo|toucan and --template FILE")
		os.Exit(2)
	}
	if err := runBench(sd, *sideName, *kubeconfig, *namespace, *template, *prefix, *n, *steps, *edgesFlag, *parallel, *pid, *timeout, *out, *podsCSV); err != nil {
		fmt.Fprintf(os.Stderr, "bench-driver: %v\n", err)
		os.Exit(1)
	}
}

func runBench(sd side, sideName, kubeconfig, ns, templatePath, prefix string, n, steps int, edgesFlag string, parallel, pid int, timeout time.Duration, out, podsCSV string) error {
	type edge struct{ child, parent string }
	var edges []edge
	for _, e := range strings.Split(edgesFlag, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		c, p, ok := strings.Cut(e, "=")
		if !ok {
			return fmt.Errorf("--edges: want CHILD=PARENT, got %q", e)
		}
		edges = append(edges, edge{c, p})
	}
	raw, err := os.ReadFile(templatePath)
	if err != nil {
		return err
	}
	var tmpl unstructured.Unstructured
	if err := yaml.Unmarshal(raw, &tmpl.Object); err != nil {
		return fmt.Errorf("%s: %w", templatePath, err)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	// The driver must never be what throttles a side.
	cfg.QPS, cfg.Burst = 2000, 4000
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	rec := &recorder{side: sd, prefix: prefix + "-", pods: map[string]*pod{}, runs: map[string]*run{},
		terminalRun: map[string]bool{"Succeeded": true, "Failed": true, "Error": true}}

	pods := kube.CoreV1().Pods(ns)
	podList, err := pods.List(ctx, metav1.ListOptions{LabelSelector: sd.podSelector, Limit: 1})
	if err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	runsAPI := dyn.Resource(sd.runs).Namespace(ns)
	runList, err := runsAPI.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil {
		return fmt.Errorf("listing %s: %w", sd.runs.Resource, err)
	}
	err = follow(ctx, podList.ResourceVersion, func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		o.LabelSelector = sd.podSelector
		return pods.Watch(ctx, o)
	}, func(obj any, at time.Time) {
		if p, ok := obj.(*corev1.Pod); ok {
			rec.pod(p, at)
		}
	})
	if err != nil {
		return err
	}
	err = follow(ctx, runList.GetResourceVersion(), runsAPI.Watch, func(obj any, at time.Time) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			rec.run(u, at)
		}
	})
	if err != nil {
		return err
	}

	var pr *proc
	if pid > 0 {
		pr = &proc{pid: pid}
		t, err := procTicks(pid)
		if err != nil {
			return fmt.Errorf("controller process %d: %w", pid, err)
		}
		pr.startTicks, pr.endTicks = t, t
		pr.sample()
	}

	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%04d", prefix, i+1)
	}
	startedAt := time.Now()
	fmt.Fprintf(os.Stderr, "bench-driver: %s: creating %d runs (%d at a time)\n", sideName, n, parallel)
	jobs := make(chan string)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range max(1, parallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range jobs {
				obj := tmpl.DeepCopy()
				obj.SetName(name)
				obj.SetNamespace(ns)
				if _, err := runsAPI.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("creating %s: %w", name, err)
					continue
				}
				at := time.Now()
				rec.mu.Lock()
				if ru := rec.runs[name]; ru != nil {
					ru.created = at
				} else {
					rec.runs[name] = &run{created: at}
				}
				rec.mu.Unlock()
			}
		}()
	}
	for _, name := range names {
		jobs <- name
	}
	close(jobs)
	wg.Wait()
	close(errs)
	submitted := time.Now()
	if err := <-errs; err != nil {
		return err // the first one says enough
	}
	fmt.Fprintf(os.Stderr, "bench-driver: %s: submitted in %.1f s; waiting for the runs\n", sideName, submitted.Sub(startedAt).Seconds())

	deadline := startedAt.Add(timeout)
	lastReport := time.Now()
	timedOut, controllerGone := false, false
	for {
		if pr != nil {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pr.pid)); errors.Is(err, os.ErrNotExist) {
				controllerGone = true
				break
			}
			pr.sample()
		}
		rec.mu.Lock()
		finished, npods, podsDone := 0, len(rec.pods), 0
		for _, name := range names {
			if ru := rec.runs[name]; ru != nil && !ru.done.IsZero() {
				finished++
			}
		}
		for _, p := range rec.pods {
			if !p.done.IsZero() {
				podsDone++
			}
		}
		rec.mu.Unlock()
		if finished == n {
			break
		}
		if time.Now().After(deadline) {
			timedOut = true
			break
		}
		if time.Since(lastReport) >= 10*time.Second {
			fmt.Fprintf(os.Stderr, "bench-driver: %s: %4.0f s: %d/%d runs finished, %d pods seen, %d done\n",
				sideName, time.Since(startedAt).Seconds(), finished, n, npods, podsDone)
			lastReport = time.Now()
		}
		time.Sleep(250 * time.Millisecond)
	}
	if pr != nil && !controllerGone {
		pr.sample()
	}
	// Events already received are in; stop the watches so nothing moves under the summary.
	cancel()
	rec.mu.Lock()
	defer rec.mu.Unlock()

	res := result{Side: sideName, Runs: n, StepsPerRun: steps, TimedOut: timedOut, ControllerGone: controllerGone,
		SubmitSeconds: submitted.Sub(startedAt).Seconds(), StartedAt: startedAt.UTC().Format(time.RFC3339),
		EdgesPerRun: len(edges), UnlabelledPodEvents: rec.unlabelled}
	byRunStep := map[[2]string]*pod{}
	for _, p := range rec.pods {
		k := [2]string{p.run, p.step}
		if old := byRunStep[k]; old != nil {
			res.DuplicatePods++
			if old.added.After(p.added) {
				continue // keep the latest attempt
			}
		}
		byRunStep[k] = p
		res.Pods++
		if p.phase == corev1.PodFailed {
			res.PodsFailed++
		}
	}
	var last time.Time
	var runSecs, edgeMs, edgeAPI, firstPod, finish []float64
	for _, name := range names {
		ru := rec.runs[name]
		if ru == nil || ru.done.IsZero() {
			res.Unfinished++
			continue
		}
		if ru.phase == "Succeeded" {
			res.Succeeded++
		} else {
			res.Failed++
		}
		if ru.done.After(last) {
			last = ru.done
		}
		if !ru.created.IsZero() {
			runSecs = append(runSecs, ru.done.Sub(ru.created).Seconds())
			if !ru.firstPod.IsZero() {
				firstPod = append(firstPod, float64(ru.firstPod.Sub(ru.created).Microseconds())/1000)
			}
		}
		var lastDone time.Time
		for k, p := range byRunStep {
			if k[0] == name && p.done.After(lastDone) {
				lastDone = p.done
			}
		}
		if !lastDone.IsZero() {
			finish = append(finish, float64(ru.done.Sub(lastDone).Microseconds())/1000)
		}
		for _, e := range edges {
			c, p := byRunStep[[2]string{name, e.child}], byRunStep[[2]string{name, e.parent}]
			if c == nil || p == nil || p.done.IsZero() {
				continue
			}
			edgeMs = append(edgeMs, float64(c.added.Sub(p.done).Microseconds())/1000)
			if !p.finished.IsZero() {
				edgeAPI = append(edgeAPI, c.created.Sub(p.finished).Seconds())
			}
		}
	}
	if !last.IsZero() {
		res.MakespanSeconds = last.Sub(startedAt).Seconds()
		res.RunsPerMinute = float64(res.Succeeded) / res.MakespanSeconds * 60
	}
	res.RunSeconds, res.EdgeWatchMs, res.EdgeAPISeconds = summarize(runSecs), summarize(edgeMs), summarize(edgeAPI)
	res.FirstPodMs, res.FinishMs = summarize(firstPod), summarize(finish)
	if pr != nil {
		res.ControllerPID = pr.pid
		res.VmHWMMiB = float64(pr.hwmKiB) / 1024
		res.PeakRSSMiB = float64(pr.peakRSSKiB) / 1024
		res.CPUSeconds = (pr.endTicks - pr.startTicks) / 100 // USER_HZ is 100 on Linux
	}

	if podsCSV != "" {
		if err := writePods(podsCSV, rec.pods, startedAt); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	fmt.Println(string(b))
	switch {
	case timedOut:
		return fmt.Errorf("%s: timed out after %s with %d of %d runs unfinished", sideName, timeout, res.Unfinished, n)
	case controllerGone:
		return fmt.Errorf("%s: the controller (pid %d) exited during the run", sideName, pr.pid)
	case res.Failed > 0:
		return fmt.Errorf("%s: %d of %d runs failed", sideName, res.Failed, n)
	}
	return nil
}

func writePods(path string, pods map[string]*pod, t0 time.Time) error {
	var b strings.Builder
	b.WriteString("pod,run,step,phase,added_ms,done_ms,created_unix,finished_unix\n")
	list := make([]*pod, 0, len(pods))
	for _, p := range pods {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].added.Before(list[j].added) })
	ms := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return strconv.FormatFloat(float64(t.Sub(t0).Microseconds())/1000, 'f', 1, 64)
	}
	unix := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return strconv.FormatInt(t.Unix(), 10)
	}
	for _, p := range list {
		fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s,%s,%s\n", p.name, p.run, p.step, p.phase, ms(p.added), ms(p.done), unix(p.created), unix(p.finished))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
