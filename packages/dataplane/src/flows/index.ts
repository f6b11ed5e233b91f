// Flow records of the node: kernel decisions from nftables tracing, L7 decisions from the
// sidecar's access log, aggregated per interval and shipped to the API server.
export { FlowAggregator } from './aggregator.js';
export type { AggregatorCounters, EndpointInfo, FlowAggregatorOptions } from './aggregator.js';
export { KernelFlowSource, traceTableScript } from './kernel-source.js';
export type { KernelFlowSourceOptions } from './kernel-source.js';
export { l7FlowTap, l7Observation, flowPath } from './l7.js';
export type { L7TapOptions } from './l7.js';
export { flowShipper } from './shipper.js';
export type { ShipperOptions } from './shipper.js';
export { parseTraceLine, provenanceFromComment, TraceAssembler } from './trace.js';
export type * from './observation.js';
export { FlowCounters, policyLabel } from './flow-counters.js';
export { L7FlowReporter } from './l7-reporter.js';
export type { L7ReporterOptions, L7ReporterStatus } from './l7-reporter.js';
export {
  L7_REPORT_PREFIX,
  observationOf,
  reportRecordOf,
  storableProvenance,
  validateL7Report,
} from './l7-report.js';
export type { L7Report, L7ReportRecord, L7ShedReason } from './l7-report.js';
