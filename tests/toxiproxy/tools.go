//go:build tools

// The TCP fault proxy the fault tests put between the function and each server it talks to
// (tests/faultproxy.py): built from its Go module like helm and the control plane, never downloaded
// as a release binary.
package tools

import _ "github.com/Shopify/toxiproxy/v2/cmd/server"
