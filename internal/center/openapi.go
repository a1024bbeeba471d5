package center

import (
	"encoding/json"
	"net/http"

	"github.com/godwit/godwit/internal/api"
)

// serveOpenAPI answers GET /api/v1/openapi.json: the route table (Routes) described as
// OpenAPI 3, made once.
func (c *Center) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	c.openapiOnce.Do(func() {
		doc, err := api.OpenAPI("Godwit center API", "v1",
			"Live migration and management of QEMU virtual machines. Every route says who may call it in x-godwit-access.", Routes())
		if err != nil {
			c.openapiErr = err
			return
		}
		c.openapi, c.openapiErr = json.MarshalIndent(doc, "", "  ")
	})
	if c.openapiErr != nil {
		api.WriteError(w, c.openapiErr)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(c.openapi)
}
