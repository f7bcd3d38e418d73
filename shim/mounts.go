// SPDX-License-Identifier: Apache-2.0

package shim

// runcShim is the delegate whose runc writes the container's init pid to
// the bundle (control.InitPidFile), which the agent binds the
// registration to: the one with which the shim gives a container the
// agent's mounts instead of the hook (package agentmounts).
const runcShim = "containerd-shim-runc-v2"
