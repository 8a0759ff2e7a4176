// The sandbox ("pause") container of the real dev node: holds the pod's namespaces, reaps the
// children it inherits as PID 1 and exits 0 on SIGTERM/SIGINT. No registry is reachable from the
// dev machine, so the kubelet's sandbox image is built here (vk_operator/devcluster/image.py).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
