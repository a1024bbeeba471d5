package api

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3gen"
)

// OpenAPI describes the routes of a route table as an OpenAPI 3.0 document: every
// operation with its parameters, body and answer schemas (generated from the Go types
// by kin-openapi's openapi3gen), the error answers, and who may call it
// (x-godwit-access, and the security schemes). Catch-all routes are not operations and
// are left out.
func OpenAPI(title, version, description string, routes []Route) (*openapi3.T, error) {
	doc := &openapi3.T{
		OpenAPI: "3.0.3",
		Info:    &openapi3.Info{Title: title, Version: version, Description: description},
		Paths:   openapi3.NewPaths(),
		Components: &openapi3.Components{
			SecuritySchemes: openapi3.SecuritySchemes{
				"bearer": &openapi3.SecuritySchemeRef{Value: openapi3.NewJWTSecurityScheme().WithBearerFormat("Godwit API token (gw_…)")},
				"basic":  &openapi3.SecuritySchemeRef{Value: &openapi3.SecurityScheme{Type: "http", Scheme: "basic"}},
			},
		},
	}
	errSchema, err := openapi3gen.NewSchemaRefForValue(Error{}, nil)
	if err != nil {
		return nil, fmt.Errorf("OpenAPI: the error schema: %w", err)
	}
	for _, rt := range routes {
		if rt.Method == "" {
			continue
		}
		op, err := operation(rt, errSchema)
		if err != nil {
			return nil, fmt.Errorf("OpenAPI: %s: %w", rt.Pattern(), err)
		}
		doc.AddOperation(rt.Path, rt.Method, op)
	}
	return doc, nil
}

// wildcard matches a ServeMux path wildcard: {name} or {rest...}.
var wildcard = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

func operation(rt Route, errSchema *openapi3.SchemaRef) (*openapi3.Operation, error) {
	op := openapi3.NewOperation()
	op.Summary = rt.Summary
	op.OperationID = operationID(rt)
	op.Extensions = map[string]any{"x-godwit-access": rt.Access}
	if rt.Action != "" {
		op.Extensions["x-godwit-audit-action"] = rt.Action
	}
	switch rt.Access {
	case AccessPublic:
		op.Security = openapi3.NewSecurityRequirements()
	case RoleViewer, RoleOperator, RoleAdmin:
		op.Security = openapi3.NewSecurityRequirements().
			With(openapi3.NewSecurityRequirement().Authenticate("bearer")).
			With(openapi3.NewSecurityRequirement().Authenticate("basic"))
	}
	for _, m := range wildcard.FindAllStringSubmatch(rt.Path, -1) {
		op.AddParameter(openapi3.NewPathParameter(m[1]).WithSchema(openapi3.NewStringSchema()))
	}
	for _, q := range rt.Query {
		op.AddParameter(openapi3.NewQueryParameter(q).WithSchema(openapi3.NewStringSchema()))
	}
	if rt.Request != nil {
		s, err := openapi3gen.NewSchemaRefForValue(rt.Request, nil)
		if err != nil {
			return nil, fmt.Errorf("request schema: %w", err)
		}
		op.RequestBody = &openapi3.RequestBodyRef{Value: openapi3.NewRequestBody().WithRequired(true).WithJSONSchemaRef(s)}
	}
	status := rt.Status
	if status == 0 {
		status = http.StatusOK
	}
	ok := openapi3.NewResponse().WithDescription(http.StatusText(status))
	switch {
	case rt.Response != nil:
		s, err := openapi3gen.NewSchemaRefForValue(rt.Response, nil)
		if err != nil {
			return nil, fmt.Errorf("answer schema: %w", err)
		}
		ok.WithJSONSchemaRef(s)
	case rt.Stream:
		ok.WithDescription("a stream (" + http.StatusText(status) + ")")
	}
	op.AddResponse(status, ok)
	op.AddResponse(0, openapi3.NewResponse().WithDescription("an error, with a sentence that says what to do").WithJSONSchemaRef(errSchema))
	if rt.Access != AccessPublic {
		op.AddResponse(http.StatusUnauthorized, openapi3.NewResponse().WithDescription("no valid credentials").WithJSONSchemaRef(errSchema))
		op.AddResponse(http.StatusForbidden, openapi3.NewResponse().WithDescription("the caller's role or identity does not allow this").WithJSONSchemaRef(errSchema))
	}
	return op, nil
}

// operationID is a stable name for an operation: method and path, e.g.
// post_api_v1_vms_name_migrate.
func operationID(rt Route) string {
	p := wildcard.ReplaceAllString(rt.Path, "$1")
	p = strings.NewReplacer("/", "_", "-", "_", ".", "_").Replace(strings.Trim(p, "/"))
	return strings.ToLower(rt.Method) + "_" + p
}
