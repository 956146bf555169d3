//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` from KServe's
//! `grpc_predict_v2.proto` (in `worker/proto/`, compiled by `build.rs`).
//!
//! `ModelInfer` takes the same one input as REST ([`super::tensors`]): its contents typed
//! (`fp32_contents` for FP32, `uint_contents` for UINT8, `bytes_contents` for BYTES) or in
//! `raw_input_contents`. A request that sent raw contents gets its outputs in
//! `raw_output_contents`, one that sent typed contents gets typed outputs. Each call's
//! `x-request-id` metadata (or a new id) comes back in the response's metadata, on errors
//! too.

use std::sync::Arc;
use std::time::Instant;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};

use super::context::{self, Call, Context, GRPC};
use super::error::RequestError;
use super::rest::REQUEST_ID;
use super::rest_v2::EXTENSIONS;
use super::tensors::{self, Output, TensorData};

/// The code generated from `proto/grpc_predict_v2.proto`.
#[allow(
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    reason = "generated code"
)]
pub mod inference {
    tonic::include_proto!("inference");
}

use inference::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use inference::model_infer_response::InferOutputTensor;
use inference::model_metadata_response::TensorMetadata;
use inference::*;

/// The service, over the shared [`Context`].
#[derive(Debug, Clone)]
pub struct InferenceService {
    ctx: Arc<Context>,
}

/// The tonic server of the service, its messages capped at `--max-body-bytes`.
pub fn server(ctx: Arc<Context>) -> GrpcInferenceServiceServer<InferenceService> {
    let limit = ctx.max_body_bytes;
    GrpcInferenceServiceServer::new(InferenceService { ctx }).max_decoding_message_size(limit)
}

/// A gRPC code as Prometheus labels usually spell it.
fn code_name(code: Code) -> String {
    match code {
        Code::Ok => "OK".into(),
        Code::InvalidArgument => "INVALID_ARGUMENT".into(),
        Code::NotFound => "NOT_FOUND".into(),
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED".into(),
        Code::Unavailable => "UNAVAILABLE".into(),
        Code::Internal => "INTERNAL".into(),
        other => format!("{other:?}"),
    }
}

/// The call's request id: the client's, when usable, or a new one.
fn request_id(metadata: &MetadataMap) -> String {
    metadata
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| context::usable_request_id(id))
        .map_or_else(context::new_request_id, str::to_string)
}

impl InferenceService {
    /// Answers a call: sets its request id on the response (or error), and counts it.
    fn finish<T>(
        &self,
        id: &str,
        started: Instant,
        reached: bool,
        result: Result<T, RequestError>,
    ) -> Result<Response<T>, Status> {
        let id_value = MetadataValue::try_from(id).ok();
        let (code, answer) = match result {
            Ok(message) => {
                let mut response = Response::new(message);
                if let Some(v) = id_value {
                    response.metadata_mut().insert(REQUEST_ID, v);
                }
                (Code::Ok, Ok(response))
            }
            Err(e) => {
                let mut status = Status::new(e.grpc_code(), e.message);
                if let Some(v) = id_value {
                    status.metadata_mut().insert(REQUEST_ID, v);
                }
                (status.code(), Err(status))
            }
        };
        let model = &self.ctx.model;
        let counted = reached && code != Code::NotFound;
        self.ctx.metrics.answered(
            GRPC,
            counted.then_some((model.name.as_str(), model.version.as_str())),
            code_name(code),
            started.elapsed().as_secs_f64(),
        );
        answer
    }

    async fn infer(
        &self,
        request: &ModelInferRequest,
        call: &Call,
    ) -> Result<ModelInferResponse, RequestError> {
        self.ctx
            .model
            .check(&request.model_name, Some(&request.model_version))?;
        let [input] = request.inputs.as_slice() else {
            return Err(RequestError::bad_request(format!(
                "the model takes one input tensor; the request has {}",
                request.inputs.len()
            )));
        };
        let raw = !request.raw_input_contents.is_empty();
        let data = if raw {
            let [contents] = request.raw_input_contents.as_slice() else {
                return Err(RequestError::bad_request(format!(
                    "{} raw_input_contents for one input",
                    request.raw_input_contents.len()
                )));
            };
            TensorData::Raw(contents.clone())
        } else {
            let contents = input.contents.clone().unwrap_or_default();
            match input.datatype.as_str() {
                "BYTES" => TensorData::Elements(contents.bytes_contents),
                "UINT8" => TensorData::Numbers(
                    contents
                        .uint_contents
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect(),
                ),
                _ => TensorData::Numbers(
                    contents
                        .fp32_contents
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect(),
                ),
            }
        };
        let instances = tensors::instances(&input.datatype, &input.shape, data, &self.ctx.model)
            .map_err(|e| e.context(format_args!("input {:?}", input.name)))?;
        let outputs = Output::requested(request.outputs.iter().map(|o| o.name.as_str()))?;
        let predictions = self.ctx.predict(call, instances).await?;
        let classes = self.ctx.model.classes.len();
        let mut response = ModelInferResponse {
            model_name: self.ctx.model.name.clone(),
            model_version: self.ctx.model.version.clone(),
            id: request.id.clone(),
            ..Default::default()
        };
        for output in outputs {
            let mut tensor = InferOutputTensor {
                name: output.name().into(),
                datatype: output.datatype().into(),
                shape: output.shape(&predictions, classes),
                ..Default::default()
            };
            if raw {
                response.raw_output_contents.push(output.raw(&predictions));
            } else {
                let mut contents = InferTensorContents::default();
                match output {
                    Output::Probabilities => {
                        contents.fp32_contents = predictions
                            .iter()
                            .flat_map(|p| p.probabilities.iter().copied())
                            .collect();
                    }
                    Output::Label => {
                        contents.int64_contents = predictions.iter().map(|p| p.label).collect();
                    }
                    Output::Class => {
                        contents.bytes_contents = predictions
                            .iter()
                            .map(|p| p.class.clone().into_bytes())
                            .collect();
                    }
                }
                tensor.contents = Some(contents);
            }
            response.outputs.push(tensor);
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        request: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        let id = request_id(request.metadata());
        self.finish(
            &id,
            Instant::now(),
            false,
            Ok(ServerLiveResponse { live: true }),
        )
    }

    async fn server_ready(
        &self,
        request: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let id = request_id(request.metadata());
        self.finish(
            &id,
            Instant::now(),
            false,
            Ok(ServerReadyResponse { ready: true }),
        )
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let started = Instant::now();
        let id = request_id(request.metadata());
        let m = request.get_ref();
        let result = self
            .ctx
            .model
            .check(&m.name, Some(&m.version))
            .map(|()| ModelReadyResponse { ready: true });
        self.finish(&id, started, true, result)
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let id = request_id(request.metadata());
        let metadata = ServerMetadataResponse {
            name: "toucan-worker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        };
        self.finish(&id, Instant::now(), false, Ok(metadata))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let started = Instant::now();
        let id = request_id(request.metadata());
        let m = request.get_ref();
        let result = self.ctx.model.check(&m.name, Some(&m.version)).map(|()| {
            let meta = self.ctx.model.metadata();
            let tensor = |t: super::model::TensorMetadata| TensorMetadata {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            };
            ModelMetadataResponse {
                name: meta.name,
                versions: meta.versions,
                platform: meta.platform,
                inputs: meta.inputs.into_iter().map(tensor).collect(),
                outputs: meta.outputs.into_iter().map(tensor).collect(),
            }
        });
        self.finish(&id, started, true, result)
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        let id = request_id(request.metadata());
        let call = Call {
            request_id: id.clone(),
            protocol: GRPC,
            started,
            attributes: self
                .ctx
                .sampler
                .attributes(&request.metadata().clone().into_headers()),
        };
        let result = self.infer(request.get_ref(), &call).await;
        self.finish(&id, started, true, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_come_from_metadata_when_usable() {
        let mut metadata = MetadataMap::new();
        metadata.insert(REQUEST_ID, MetadataValue::from_static("abc"));
        assert_eq!(request_id(&metadata), "abc");
        let fresh = request_id(&MetadataMap::new());
        assert!(context::usable_request_id(&fresh));
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
    }
}
