// Command controlplane is a real Kubernetes control plane for pod-rebalancer's tests: embedded
// etcd, kube-apiserver and kube-controller-manager built from k8s.io/kubernetes, and a node
// simulator standing in for the scheduler and the kubelets.
//
//	controlplane up --dir DIR             everything; writes DIR/ready.json once it all answers
//	controlplane kube-apiserver ARGS      the upstream command, as `up` starts it
//	controlplane kube-controller-manager ARGS
//	controlplane backdate --etcd URL --created RFC3339 KEY...   (backdate.go)
package main

import (
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: controlplane up --dir DIR | kube-apiserver ARGS | kube-controller-manager ARGS | backdate ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "up":
		up(os.Args[2:])
	case "kube-apiserver":
		cmd := apiserver.NewAPIServerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "kube-controller-manager":
		cmd := controllermanager.NewControllerManagerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "backdate":
		backdate(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
}
