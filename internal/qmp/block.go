package qmp

import "context"

// BlockDeviceInfo describes one block node (QEMU's BlockDeviceInfo): an
// element of query-named-block-nodes, or the medium of a query-block entry.
type BlockDeviceInfo struct {
	// NodeName is the node's name (auto-generated names start with '#').
	NodeName string `json:"node-name,omitempty"`
	// File is the file name (or JSON description) of the node's image.
	File string `json:"file"`
	// Drv is the block driver, e.g. "file", "raw", "qcow2".
	Drv string `json:"drv"`
	// RO is true when the node is read-only.
	RO bool `json:"ro"`
	// Active is false while the node is inactive (e.g. on an incoming
	// migration's destination before it takes over the image).
	Active bool `json:"active"`
	// Encrypted is true for encrypted images.
	Encrypted bool `json:"encrypted"`
	// DetectZeroes is "off", "on" or "unmap".
	DetectZeroes string `json:"detect_zeroes"`
	// BackingFile is the backing file name, if any.
	BackingFile string `json:"backing_file,omitempty"`
	// BackingFileDepth is the length of the backing chain.
	BackingFileDepth int `json:"backing_file_depth"`
	// Cache is the node's cache mode.
	Cache BlockdevCacheInfo `json:"cache"`
	// Image describes the image (size, format).
	Image ImageInfo `json:"image"`
	// WriteThreshold is the write threshold in bytes (0: none).
	WriteThreshold int64 `json:"write_threshold"`
}

// BlockdevCacheInfo is a node's cache mode.
type BlockdevCacheInfo struct {
	// Writeback is true when writes complete before reaching the disk.
	Writeback bool `json:"writeback"`
	// Direct is true when the host page cache is bypassed (O_DIRECT).
	Direct bool `json:"direct"`
	// NoFlush is true when flush requests are ignored.
	NoFlush bool `json:"no-flush"`
}

// ImageInfo is the subset of QEMU's ImageInfo this project uses.
type ImageInfo struct {
	Filename    string `json:"filename"`
	Format      string `json:"format"`
	VirtualSize int64  `json:"virtual-size"`
	ActualSize  int64  `json:"actual-size,omitempty"`
	ClusterSize int64  `json:"cluster-size,omitempty"`
	DirtyFlag   bool   `json:"dirty-flag,omitempty"`
}

// QueryNamedBlockNodes lists the block nodes (query-named-block-nodes),
// flat: each node once, without its backing chain nested.
func (m *Monitor) QueryNamedBlockNodes(ctx context.Context) ([]BlockDeviceInfo, error) {
	args := struct {
		Flat bool `json:"flat"`
	}{true}
	var nodes []BlockDeviceInfo
	err := m.Execute(ctx, "query-named-block-nodes", args, &nodes)
	return nodes, err
}

// BlockInfo is an element of query-block: a block backend (usually a
// guest device) and its medium.
type BlockInfo struct {
	// Device is the legacy drive name ("" for -blockdev/-device setups).
	Device string `json:"device"`
	// QDev is the QOM path or id of the guest device.
	QDev string `json:"qdev,omitempty"`
	// Type is always "unknown" in current QEMU.
	Type string `json:"type"`
	// Removable is true for removable media.
	Removable bool `json:"removable"`
	// Locked is true when the guest has locked the medium.
	Locked bool `json:"locked"`
	// Inserted is the root node of the medium, nil when empty.
	Inserted *BlockDeviceInfo `json:"inserted,omitempty"`
	// IOStatus is "ok", "failed" or "nospace" when I/O status is enabled.
	IOStatus string `json:"io-status,omitempty"`
}

// QueryBlock lists the block backends and their media (query-block).
func (m *Monitor) QueryBlock(ctx context.Context) ([]BlockInfo, error) {
	var blocks []BlockInfo
	err := m.Execute(ctx, "query-block", nil, &blocks)
	return blocks, err
}

// BlockdevAdd creates a block node (blockdev-add). options is QEMU's
// BlockdevOptions object, e.g.
//
//	map[string]any{"driver": "file", "node-name": "d0-file",
//		"filename": "/data/d0.img", "cache": map[string]any{"direct": true}}
func (m *Monitor) BlockdevAdd(ctx context.Context, options any) error {
	return m.Execute(ctx, "blockdev-add", options, nil)
}

// BlockdevDel deletes a block node that nothing uses any more
// (blockdev-del).
func (m *Monitor) BlockdevDel(ctx context.Context, nodeName string) error {
	args := struct {
		NodeName string `json:"node-name"`
	}{nodeName}
	return m.Execute(ctx, "blockdev-del", args, nil)
}

// BlockdevSetActive activates or inactivates a block node, or all nodes
// when nodeName is "" (blockdev-set-active, QEMU 10.0 and later). An
// inactive node does not touch its image, which is how two QEMUs share an
// image during migration.
func (m *Monitor) BlockdevSetActive(ctx context.Context, nodeName string, active bool) error {
	args := struct {
		NodeName string `json:"node-name,omitempty"`
		Active   bool   `json:"active"`
	}{nodeName, active}
	return m.Execute(ctx, "blockdev-set-active", args, nil)
}
