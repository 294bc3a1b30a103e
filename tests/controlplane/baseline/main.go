// Command baseline is make bench's client-go baseline: what a Go rebalancer does for one alert,
// with the same data as the function. It reads the Deployment, lists its pods with client-go
// (protobuf on the wire, as generated clientsets ask by default), sends each PromQL query to the
// metrics backend, and picks the outliers the same way the function's cv mode does in the bench's
// scene: when the coefficient of variation of the Ready pods' values exceeds the threshold, the
// hottest pod and the coldest one. The reads run one after the other, as a CronJob's binary does.
//
//	baseline -kubeconfig K -namespace N -deployment D -metrics URL -query cpu=Q -query lag=Q -threshold cpu=0.3 ...
//
// One run by default (the run-once process, timed from outside); with -serve, one run per line
// read on stdin, each printed with its own time (the warm, in-process figure).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }
func (p pairs) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want name=value, got %q", v)
	}
	p[name] = value
	return nil
}

type result struct {
	Pods     int                 `json:"pods"`
	ListMS   float64             `json:"list_ms"`
	QueryMS  float64             `json:"query_ms"`
	TotalMS  float64             `json:"total_ms"`
	CV       map[string]float64  `json:"cv"`
	Selected map[string][]string `json:"selected"`
}

type baseline struct {
	client     *kubernetes.Clientset
	http       *http.Client
	namespace  string
	deployment string
	metrics    string
	queries    pairs
	thresholds pairs
}

func main() {
	queries, thresholds := pairs{}, pairs{}
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the identity to read as")
	b := baseline{queries: queries, thresholds: thresholds, http: &http.Client{Timeout: 30 * time.Second}}
	flag.StringVar(&b.namespace, "namespace", "", "the Deployment's namespace")
	flag.StringVar(&b.deployment, "deployment", "", "the Deployment")
	flag.StringVar(&b.metrics, "metrics", "", "the Prometheus API's base URL")
	flag.Var(queries, "query", "signal=PromQL answering one value per pod (label pod); repeatable")
	flag.Var(thresholds, "threshold", "signal=CV above which the outliers are picked; repeatable")
	serve := flag.Bool("serve", false, "one run per line on stdin, each printed")
	flag.Parse()

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail(err)
	}
	config.QPS, config.Burst = 1000, 1000 // no client-side throttling in a benchmark
	if b.client, err = kubernetes.NewForConfig(config); err != nil {
		fail(err)
	}
	if !*serve {
		print(b.run())
		return
	}
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		print(b.run())
	}
}

func (b baseline) run() result {
	ctx := context.Background()
	started := time.Now()
	deployment, err := b.client.AppsV1().Deployments(b.namespace).Get(ctx, b.deployment, metav1.GetOptions{})
	if err != nil {
		fail(err)
	}
	selector, err := metav1.LabelSelectorAsSelector(deployment.Spec.Selector)
	if err != nil {
		fail(err)
	}
	pods, err := b.client.CoreV1().Pods(b.namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		fail(err)
	}
	ready := map[string]bool{}
	for i := range pods.Items {
		if isReady(&pods.Items[i]) {
			ready[pods.Items[i].Name] = true
		}
	}
	listed := time.Now()
	out := result{Pods: len(pods.Items), CV: map[string]float64{}, Selected: map[string][]string{}}
	names := make([]string, 0, len(b.queries))
	for name := range b.queries {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, signal := range names {
		values := b.query(b.queries[signal])
		cv, selected := outliers(values, ready, b.threshold(signal))
		out.CV[signal], out.Selected[signal] = cv, selected
	}
	out.ListMS = ms(listed.Sub(started))
	out.QueryMS = ms(time.Since(listed))
	out.TotalMS = ms(time.Since(started))
	return out
}

func isReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (b baseline) threshold(signal string) float64 {
	value, err := strconv.ParseFloat(b.thresholds[signal], 64)
	if err != nil {
		fail(fmt.Errorf("no -threshold for %s: %v", signal, err))
	}
	return value
}

// query: an instant query's vector as pod -> value.
func (b baseline) query(promql string) map[string]float64 {
	response, err := b.http.PostForm(b.metrics+"/api/v1/query", url.Values{"query": {promql}})
	if err != nil {
		fail(err)
	}
	defer response.Body.Close()
	var answer struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(response.Body).Decode(&answer); err != nil || answer.Status != "success" {
		fail(fmt.Errorf("query %q: status %q, %v", promql, answer.Status, err))
	}
	values := map[string]float64{}
	for _, series := range answer.Data.Result {
		text, _ := series.Value[1].(string)
		if value, err := strconv.ParseFloat(text, 64); err == nil && series.Metric["pod"] != "" {
			values[series.Metric["pod"]] = value
		}
	}
	return values
}

// outliers: the CV of the Ready pods' values and, above the threshold, the hottest and the coldest pod.
func outliers(values map[string]float64, ready map[string]bool, threshold float64) (float64, []string) {
	names := make([]string, 0, len(values))
	sum := 0.0
	for pod, value := range values {
		if ready[pod] {
			names = append(names, pod)
			sum += value
		}
	}
	if len(names) < 2 || sum == 0 {
		return 0, []string{}
	}
	// Coldest first, ties broken by name, as the function ranks them.
	sort.Slice(names, func(i, j int) bool {
		if values[names[i]] != values[names[j]] {
			return values[names[i]] < values[names[j]]
		}
		return names[i] < names[j]
	})
	mean, squares := sum/float64(len(names)), 0.0
	for _, pod := range names {
		squares += (values[pod] - mean) * (values[pod] - mean)
	}
	cv := math.Sqrt(squares/float64(len(names))) / mean
	if cv <= threshold {
		return cv, []string{}
	}
	return cv, []string{names[len(names)-1], names[0]}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func print(r result) {
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "baseline:", err)
	os.Exit(1)
}
