// SPDX-License-Identifier: Apache-2.0

package client

import "github.com/northstar-oci/northstar/agent/identity"

// DefaultSPIFFEEndpoint is where a container finds the SPIFFE Workload API
// of its own identity when the agent serves it ([spiffe] trust_domain), as
// go-spiffe and SPIRE take it in SPIFFE_ENDPOINT_SOCKET.
const DefaultSPIFFEEndpoint = "unix:///run/northstar/api/spiffe.sock"

// SPIFFEPath is the path of identity's SPIFFE ID,
// spiffe://<trust domain><path> (docs/spiffe.md): each '/'-separated part
// a segment, '_', ':' and '@' escaped as "_5F", "_3A", "_40".
func SPIFFEPath(id string) (string, error) { return identity.SPIFFEPath(id) }

// IdentityOfSPIFFEPath is the identity whose SPIFFE ID has path, for the
// paths SPIFFEPath writes.
func IdentityOfSPIFFEPath(path string) (string, error) { return identity.FromSPIFFEPath(path) }
