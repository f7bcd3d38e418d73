// SPDX-License-Identifier: Apache-2.0

package identity

import (
	"errors"
	"fmt"
	"strings"
)

// The SPIFFE ID of a container is spiffe://<trust domain><SPIFFEPath(identity)>
// (DESIGN.md §14). SPIFFE path segments allow only [A-Za-z0-9._-] and must
// not be empty, "." or ".."; an identity also allows ':', '@' and '/' and
// none of those segment rules. SPIFFEPath maps one onto the other:
//
//   - the identity is split at every '/', and each part is one path
//     segment: the CRI identity "default/mqtt-0/broker" is the path
//     "/default/mqtt-0/broker", unchanged;
//   - in a part, [A-Za-z0-9.-] stay as they are, and '_', ':' and '@'
//     become '_' and their two upper-case hex digits: "_5F", "_3A", "_40"
//     ("svc@example.org:443" is "/svc_40example.org_3A443");
//   - an empty part is the segment "_", and a part that is exactly "." or
//     ".." is "_2E" or "_2E_2E" ("a//../b" is "/a/_/_2E_2E/b").
//
// The escape character is '_' because Kubernetes names (hence CRI
// identities) cannot contain it: what most containers are called maps to
// itself. The map cannot collide: every '_' in a segment it writes starts
// one of the five escapes above ("_" alone only as a whole segment), so
// each segment decodes one way, and '/' is never written inside a
// segment; FromSPIFFEPath is its inverse, and accepts only what
// SPIFFEPath writes. The longest path is 3 × MaxLen + 1 bytes, far below
// the 2048 bytes a SPIFFE ID may have.

// SPIFFEPath returns the path of the SPIFFE ID of identity id: "/" and
// segments in the characters SPIFFE allows.
func SPIFFEPath(id string) (string, error) {
	if !Valid(id) {
		return "", errors.New("spiffe path: not an identity")
	}
	var b strings.Builder
	b.Grow(len(id) + 8)
	for part := range strings.SplitSeq(id, "/") {
		b.WriteByte('/')
		switch part {
		case "":
			b.WriteString("_")
			continue
		case ".":
			b.WriteString("_2E")
			continue
		case "..":
			b.WriteString("_2E_2E")
			continue
		}
		for i := 0; i < len(part); i++ {
			switch c := part[i]; c {
			case '_', ':', '@':
				fmt.Fprintf(&b, "_%02X", c)
			default:
				b.WriteByte(c)
			}
		}
	}
	return b.String(), nil
}

// FromSPIFFEPath returns the identity whose SPIFFE path is path, for
// exactly the paths SPIFFEPath writes; anything else is an error.
func FromSPIFFEPath(path string) (string, error) {
	// Longer than any path SPIFFEPath writes: refused before any work.
	if len(path) < 2 || path[0] != '/' || len(path) > 3*MaxLen+1 {
		return "", errors.New("spiffe path: not the path of an identity")
	}
	var b strings.Builder
	b.Grow(len(path))
	for i, seg := range strings.Split(path[1:], "/") {
		if i > 0 {
			b.WriteByte('/')
		}
		switch seg {
		case "_":
			continue
		case "_2E":
			b.WriteByte('.')
			continue
		case "_2E_2E":
			b.WriteString("..")
			continue
		}
		for j := 0; j < len(seg); j++ {
			c := seg[j]
			if c != '_' {
				b.WriteByte(c)
				continue
			}
			if j+2 >= len(seg) {
				return "", errors.New("spiffe path: not the path of an identity")
			}
			switch seg[j+1 : j+3] {
			case "5F":
				b.WriteByte('_')
			case "3A":
				b.WriteByte(':')
			case "40":
				b.WriteByte('@')
			default:
				return "", errors.New("spiffe path: not the path of an identity")
			}
			j += 2
		}
	}
	id := b.String()
	// Canonical only: whatever decoded must encode back to path, which
	// also refuses characters neither side allows.
	if p, err := SPIFFEPath(id); err != nil || p != path {
		return "", errors.New("spiffe path: not the path of an identity")
	}
	return id, nil
}
