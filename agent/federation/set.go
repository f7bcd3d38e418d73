// SPDX-License-Identifier: Apache-2.0

// Package federation is trust between attested northstar hosts (DESIGN.md
// §17), each its own trust domain, with no server in the middle: an agent
// serves its trust domain's bundle (the SPIFFE Federation https_spiffe
// profile, go-spiffe's federation.NewHandler) and, beside it, evidence of
// its TPM (package attest) answering a verifier's challenge; it takes a
// peer's bundle only while the peer's evidence verifies with a fresh nonce
// and the bundle's one X.509 authority is the root the peer's attestation
// key certified as resident in its TPM. Each peer is checked again at 80 %
// of its refresh hint and dropped at the first failure.
//
// Set is what the agent's Workload API reads: the current peer bundles and
// a channel closed at each change (agent/spiffe.Federated).
package federation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// StatusFile is the name of the peers' state in the agent's state
// directory, read by `northstarctl status`.
const StatusFile = "federation.json"

// PeerStatus is what `northstarctl status` shows of one peer.
type PeerStatus struct {
	TrustDomain string    `json:"trust_domain"`
	Trusted     bool      `json:"trusted"`
	Since       time.Time `json:"since"`            // of this state
	Checked     time.Time `json:"checked"`          // the last check
	Next        time.Time `json:"next"`             // the next check
	Reason      string    `json:"reason,omitempty"` // why it is not trusted
}

// Set is the bundles of the peers trusted now. Safe for concurrent use.
type Set struct {
	mu      sync.Mutex // guards all below
	bundles map[string][]byte
	changed chan struct{}
	status  map[string]PeerStatus
	file    string // StatusFile's path ("" not written)
}

// NewSet returns an empty Set writing its peers' state to statusFile
// ("": nowhere).
func NewSet(statusFile string) *Set {
	return &Set{bundles: map[string][]byte{}, changed: make(chan struct{}), status: map[string]PeerStatus{}, file: statusFile}
}

// FederatedBundles implements agent/spiffe.Federated.
func (s *Set) FederatedBundles() (map[string][]byte, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.bundles), s.changed
}

// Status returns the peers' state, sorted by trust domain.
func (s *Set) Status() []PeerStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sorted()
}

func (s *Set) sorted() []PeerStatus {
	out := slices.Collect(maps.Values(s.status))
	slices.SortFunc(out, func(a, b PeerStatus) int { return bytes.Compare([]byte(a.TrustDomain), []byte(b.TrustDomain)) })
	return out
}

// set records td's check: its bundle (the DER of its X.509 authorities)
// when it passed, nil when it failed (the bundle is dropped). It reports
// whether the peer's state changed.
func (s *Set) set(td spiffeid.TrustDomain, der []byte, reason string, now, next time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := td.IDString()
	old, had := s.bundles[key]
	if der == nil {
		delete(s.bundles, key)
	} else {
		s.bundles[key] = der
	}
	if had != (der != nil) || !bytes.Equal(old, der) {
		close(s.changed)
		s.changed = make(chan struct{})
	}
	st, ok := s.status[td.Name()]
	trusted := der != nil
	changed := !ok || st.Trusted != trusted || st.Reason != reason
	if changed {
		st.Since = now
	}
	st.TrustDomain, st.Trusted, st.Reason, st.Checked, st.Next = td.Name(), trusted, reason, now, next
	s.status[td.Name()] = st
	s.write()
	return changed
}

// write replaces the status file (under s.mu); a failure costs only
// `northstarctl status` its view.
func (s *Set) write() {
	if s.file == "" {
		return
	}
	b, err := json.MarshalIndent(struct {
		Peers []PeerStatus `json:"peers"`
	}{s.sorted()}, "", "  ")
	if err != nil {
		return
	}
	tmp := s.file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return
	}
	_ = os.Rename(tmp, s.file)
}

// ReadStatus reads the peers' state an agent wrote in stateDir.
func ReadStatus(stateDir string) ([]PeerStatus, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, StatusFile))
	if err != nil {
		return nil, err
	}
	var v struct {
		Peers []PeerStatus `json:"peers"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", StatusFile, err)
	}
	return v.Peers, nil
}
