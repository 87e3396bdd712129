//! `mode = "rows"`: backups read through the query API into Parquet files, restores by insert.
//!
//! Layout under a backup location: `meta/backup_meta.json` and `meta/full_meta.json` (format
//! `planrun-rows`, with schema, partitions and indexes), `meta/rows_meta.json` (the files of
//! every partition and their key ranges), and `rows/<db>/<coll>/<partition>/<seq>.parquet`.
//! Each file holds one primary-key page (bounded in bytes), so memory stays bounded whatever the
//! collection size. Each file is a checkpointed task recording its last key: a resumed backup
//! continues after the last recorded file, and rewrites a file that was written but not recorded
//! (a put is atomic, the content is the same). A restore records each file it inserted; a file
//! whose insert may have happened before a crash is reconciled by counting its key range in the
//! target (key ranges of files never overlap), so no row is inserted twice.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow_schema::{DataType as Arrow, Field, Schema};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};

use super::meta::{self, BackupInfo, CollectionBackupInfo, CollectionSchema, PartitionBackupInfo};
use super::restore::selected;
use super::{Result, StepCtx, StepError, fail, join, to_json};
use crate::checkpoint::TaskState;
use crate::milvus::pb::schema::{
    ArrayArray, BoolArray, DataType, DoubleArray, FieldData, FloatArray, IntArray, JsonArray,
    LongArray, ScalarField, StringArray as PbStrings, VectorField, field_data, scalar_field,
    vector_field,
};
use crate::milvus::{MilvusClient, Pk};
use crate::plan::{BackupStep, RestoreStep};
use crate::storage::Storage;

pub const FORMAT: &str = "planrun-rows";
pub const ROWS_META: &str = "meta/rows_meta.json";
/// Bytes per page (and so per Parquet file and per insert), well under gRPC's message limits.
const PAGE_BYTES: usize = 16 << 20;
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// The files of a rows backup, per collection and partition.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsMeta {
    pub collections: Vec<RowsCollection>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsCollection {
    pub db_name: String,
    pub collection_name: String,
    pub partitions: Vec<RowsPartition>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RowsPartition {
    pub name: String,
    pub files: Vec<RowsFile>,
}

/// One Parquet file: a primary-key page. Key ranges of files never overlap.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowsFile {
    /// Relative to the backup location.
    pub key: String,
    pub rows: u64,
    pub first: Key,
    pub last: Key,
}

/// A primary key as it is stored in the meta and checkpoints (a number or a string).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Key {
    Int(i64),
    Str(String),
}

impl From<Pk> for Key {
    fn from(p: Pk) -> Key {
        match p {
            Pk::Int(v) => Key::Int(v),
            Pk::Str(s) => Key::Str(s),
        }
    }
}

impl From<&Key> for Pk {
    fn from(k: &Key) -> Pk {
        match k {
            Key::Int(v) => Pk::Int(*v),
            Key::Str(s) => Pk::Str(s.clone()),
        }
    }
}

/// One column of the Parquet files: a user field, or `$meta` for the dynamic field.
#[derive(Clone, Debug)]
struct Col {
    name: String,
    ty: DataType,
    element: DataType,
    dim: usize,
    nullable: bool,
    dynamic: bool,
}

fn columns(schema: &CollectionSchema) -> std::result::Result<Vec<Col>, String> {
    let mut out = Vec::new();
    for f in schema
        .fields
        .iter()
        .filter(|f| !f.is_dynamic && (f.field_id >= 100 || f.field_id == 0))
    {
        let ty = DataType::try_from(f.data_type).unwrap_or(DataType::None);
        if matches!(ty, DataType::SparseFloatVector | DataType::None) {
            return Err(format!(
                "field `{}` has type {ty:?}, which rows mode does not handle yet",
                f.name
            ));
        }
        let dim = f
            .type_params
            .iter()
            .find(|kv| kv.key == "dim")
            .and_then(|kv| kv.value.parse().ok())
            .unwrap_or(0);
        out.push(Col {
            name: f.name.clone(),
            ty,
            element: DataType::try_from(f.element_type).unwrap_or(DataType::None),
            dim,
            nullable: f.nullable,
            dynamic: false,
        });
    }
    if schema.enable_dynamic_field {
        out.push(Col {
            name: "$meta".into(),
            ty: DataType::Json,
            element: DataType::None,
            dim: 0,
            nullable: false,
            dynamic: true,
        });
    }
    Ok(out)
}

fn arrow_type(c: &Col) -> Arrow {
    match c.ty {
        DataType::Bool => Arrow::Boolean,
        DataType::Int8 => Arrow::Int8,
        DataType::Int16 => Arrow::Int16,
        DataType::Int32 => Arrow::Int32,
        DataType::Int64 => Arrow::Int64,
        DataType::Float => Arrow::Float32,
        DataType::Double => Arrow::Float64,
        DataType::VarChar | DataType::String => Arrow::Utf8,
        DataType::FloatVector => Arrow::FixedSizeList(
            Arc::new(Field::new("item", Arrow::Float32, true)),
            c.dim as i32,
        ),
        DataType::BinaryVector => Arrow::FixedSizeBinary(c.dim.div_ceil(8) as i32),
        DataType::Float16Vector | DataType::BFloat16Vector => {
            Arrow::FixedSizeBinary((c.dim * 2) as i32)
        }
        // JSON keeps its exact bytes; an array keeps its protobuf encoding (element type and all).
        _ => Arrow::Binary,
    }
}

fn arrow_schema(cols: &[Col]) -> Arc<Schema> {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, arrow_type(c), true))
            .collect::<Vec<_>>(),
    ))
}

/// A query page as an Arrow batch with one column per `cols`, nulls where `valid_data` says so.
fn page_to_batch(
    cols: &[Col],
    fields: &[FieldData],
    n: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for c in cols {
        let f = fields
            .iter()
            .find(|f| {
                if c.dynamic {
                    f.is_dynamic || f.field_name == "$meta"
                } else {
                    f.field_name == c.name
                }
            })
            .ok_or_else(|| format!("the query answer has no column `{}`", c.name))?;
        let idx = super::verify::value_index(f, n);
        let short = || format!("column `{}` is shorter than the page", c.name);
        // One scalar column: the oneof variant it must hold, and how a value is appended.
        macro_rules! column {
            ($builder:expr, $variant:ident, |$v:ident| $value:expr) => {{
                let Some(field_data::Field::Scalars(ScalarField {
                    data: Some(scalar_field::Data::$variant(a)),
                })) = &f.field
                else {
                    return Err(format!("column `{}` has an unexpected type", c.name));
                };
                let mut b = $builder;
                for j in &idx {
                    match j {
                        Some(j) => {
                            let $v = a.data.get(*j).ok_or_else(short)?;
                            b.append_value($value)
                        }
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let arr: ArrayRef = match c.ty {
            DataType::Bool => column!(BooleanBuilder::with_capacity(n), BoolData, |v| *v),
            DataType::Int8 => column!(Int8Builder::with_capacity(n), IntData, |v| *v as i8),
            DataType::Int16 => column!(Int16Builder::with_capacity(n), IntData, |v| *v as i16),
            DataType::Int32 => column!(Int32Builder::with_capacity(n), IntData, |v| *v),
            DataType::Int64 => column!(Int64Builder::with_capacity(n), LongData, |v| *v),
            DataType::Float => column!(Float32Builder::with_capacity(n), FloatData, |v| *v),
            DataType::Double => column!(Float64Builder::with_capacity(n), DoubleData, |v| *v),
            DataType::VarChar | DataType::String => {
                column!(StringBuilder::new(), StringData, |v| v)
            }
            DataType::Json => column!(BinaryBuilder::new(), JsonData, |v| v),
            // Arrays keep Milvus's own encoding of the element list: any element type, one column.
            DataType::Array => column!(BinaryBuilder::new(), ArrayData, |v| v.encode_to_vec()),
            DataType::FloatVector => {
                let Some(field_data::Field::Vectors(VectorField {
                    data: Some(vector_field::Data::FloatVector(a)),
                    ..
                })) = &f.field
                else {
                    return Err(format!("column `{}` has an unexpected type", c.name));
                };
                let mut b = FixedSizeListBuilder::new(Float32Builder::new(), c.dim as i32)
                    .with_field(Arc::new(Field::new("item", Arrow::Float32, true)));
                for j in &idx {
                    match j {
                        Some(j) => {
                            let v = a.data.get(j * c.dim..(j + 1) * c.dim).ok_or_else(short)?;
                            b.values().append_slice(v);
                            b.append(true);
                        }
                        None => {
                            b.values().append_nulls(c.dim);
                            b.append(false);
                        }
                    }
                }
                Arc::new(b.finish())
            }
            DataType::BinaryVector | DataType::Float16Vector | DataType::BFloat16Vector => {
                let raw = match &f.field {
                    Some(field_data::Field::Vectors(VectorField {
                        data:
                            Some(
                                vector_field::Data::BinaryVector(b)
                                | vector_field::Data::Float16Vector(b)
                                | vector_field::Data::Bfloat16Vector(b),
                            ),
                        ..
                    })) => b,
                    _ => return Err(format!("column `{}` has an unexpected type", c.name)),
                };
                let width = if c.ty == DataType::BinaryVector {
                    c.dim.div_ceil(8)
                } else {
                    c.dim * 2
                };
                let mut b = FixedSizeBinaryBuilder::new(width as i32);
                for j in &idx {
                    match j {
                        Some(j) => b
                            .append_value(raw.get(j * width..(j + 1) * width).ok_or_else(short)?)
                            .map_err(|e| e.to_string())?,
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            other => {
                return Err(format!(
                    "column `{}`: type {other:?} is not handled",
                    c.name
                ));
            }
        };
        arrays.push(arr);
    }
    RecordBatch::try_new(arrow_schema(cols), arrays).map_err(|e| e.to_string())
}

/// A batch read back from Parquet as insert columns.
fn batch_to_fields(
    cols: &[Col],
    batch: &RecordBatch,
) -> std::result::Result<Vec<FieldData>, String> {
    let mut out = Vec::with_capacity(cols.len());
    for c in cols {
        let a = batch
            .column_by_name(&c.name)
            .ok_or_else(|| format!("the file has no column `{}`", c.name))?;
        let n = a.len();
        let valid: Vec<bool> = (0..n).map(|i| a.is_valid(i)).collect();
        let wrong = || format!("column `{}` has an unexpected Arrow type", c.name);
        macro_rules! get {
            ($t:ty) => {
                a.as_any().downcast_ref::<$t>().ok_or_else(wrong)?
            };
        }
        let scalar =
            |d: scalar_field::Data| Some(field_data::Field::Scalars(ScalarField { data: Some(d) }));
        // One scalar column: its Arrow array type, the oneof variant and message it becomes, and
        // the value of a row (nulls become the type's default; `valid_data` marks them).
        macro_rules! scalars {
            ($arrow:ty, $variant:ident, $message:ident, |$v:ident| $value:expr) => {
                scalar(scalar_field::Data::$variant($message {
                    data: get!($arrow).iter().map(|$v| $value).collect(),
                }))
            };
        }
        let field = match c.ty {
            DataType::Bool => {
                scalars!(BooleanArray, BoolData, BoolArray, |v| v.unwrap_or_default())
            }
            DataType::Int8 => {
                scalars!(Int8Array, IntData, IntArray, |v| v.unwrap_or_default()
                    as i32)
            }
            DataType::Int16 => {
                scalars!(Int16Array, IntData, IntArray, |v| v.unwrap_or_default()
                    as i32)
            }
            DataType::Int32 => scalars!(Int32Array, IntData, IntArray, |v| v.unwrap_or_default()),
            DataType::Int64 => scalars!(Int64Array, LongData, LongArray, |v| v.unwrap_or_default()),
            DataType::Float => {
                scalars!(Float32Array, FloatData, FloatArray, |v| v
                    .unwrap_or_default())
            }
            DataType::Double => {
                scalars!(Float64Array, DoubleData, DoubleArray, |v| v
                    .unwrap_or_default())
            }
            DataType::VarChar | DataType::String => {
                scalars!(StringArray, StringData, PbStrings, |v| v
                    .unwrap_or_default()
                    .to_string())
            }
            DataType::Json => scalars!(BinaryArray, JsonData, JsonArray, |v| v
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| b"{}".to_vec())),
            DataType::Array => {
                let mut data = Vec::with_capacity(n);
                for v in get!(BinaryArray).iter() {
                    let mut elem = match v {
                        Some(b) => ScalarField::decode(b).map_err(|e| {
                            format!("column `{}` holds a bad array value: {e}", c.name)
                        })?,
                        None => ScalarField::default(),
                    };
                    // An empty array may come back without its typed list; Milvus 2.3.5 crashes
                    // on an insert whose array element has none.
                    if elem.data.is_none() {
                        elem.data = Some(empty_elements(c.element));
                    }
                    data.push(elem);
                }
                scalar(scalar_field::Data::ArrayData(ArrayArray {
                    data,
                    element_type: c.element as i32,
                }))
            }
            DataType::FloatVector => {
                let l = get!(FixedSizeListArray);
                let values = l
                    .values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(wrong)?;
                let data: Vec<f32> = values.iter().map(|v| v.unwrap_or_default()).collect();
                Some(field_data::Field::Vectors(VectorField {
                    dim: c.dim as i64,
                    data: Some(vector_field::Data::FloatVector(FloatArray { data })),
                }))
            }
            DataType::BinaryVector | DataType::Float16Vector | DataType::BFloat16Vector => {
                let b = get!(FixedSizeBinaryArray);
                let width = b.value_length() as usize;
                let mut raw = Vec::with_capacity(n * width);
                for i in 0..n {
                    if b.is_valid(i) {
                        raw.extend_from_slice(b.value(i));
                    } else {
                        raw.extend(std::iter::repeat_n(0u8, width));
                    }
                }
                let data = match c.ty {
                    DataType::BinaryVector => vector_field::Data::BinaryVector(raw),
                    DataType::Float16Vector => vector_field::Data::Float16Vector(raw),
                    _ => vector_field::Data::Bfloat16Vector(raw),
                };
                Some(field_data::Field::Vectors(VectorField {
                    dim: c.dim as i64,
                    data: Some(data),
                }))
            }
            other => {
                return Err(format!(
                    "column `{}`: type {other:?} is not handled",
                    c.name
                ));
            }
        };
        out.push(FieldData {
            r#type: c.ty as i32,
            field_name: c.name.clone(),
            field,
            field_id: 0,
            is_dynamic: c.dynamic,
            valid_data: if c.nullable { valid } else { Vec::new() },
        });
    }
    Ok(out)
}

/// An empty list of array elements of this type.
fn empty_elements(t: DataType) -> scalar_field::Data {
    match t {
        DataType::Bool => scalar_field::Data::BoolData(BoolArray::default()),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            scalar_field::Data::IntData(IntArray::default())
        }
        DataType::Int64 => scalar_field::Data::LongData(LongArray::default()),
        DataType::Float => scalar_field::Data::FloatData(FloatArray::default()),
        DataType::Double => scalar_field::Data::DoubleData(DoubleArray::default()),
        _ => scalar_field::Data::StringData(PbStrings::default()),
    }
}

fn to_parquet(batch: &RecordBatch) -> std::result::Result<Vec<u8>, String> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

fn from_parquet(data: bytes::Bytes) -> std::result::Result<Vec<RecordBatch>, String> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| e.to_string())?
        .with_batch_size(1 << 20)
        .build()
        .map_err(|e| e.to_string())?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn page_limit(cols: &[Col]) -> usize {
    let mut row = 64usize;
    for c in cols {
        row += match c.ty {
            DataType::FloatVector => c.dim * 4,
            DataType::Float16Vector | DataType::BFloat16Vector => c.dim * 2,
            DataType::BinaryVector => c.dim.div_ceil(8),
            DataType::VarChar | DataType::String => 512,
            DataType::Json | DataType::Array => 2048,
            _ => 8,
        };
    }
    (PAGE_BYTES / row).clamp(1, crate::milvus::MAX_QUERY_LIMIT)
}

/// A file name part for a partition or collection name that is safe in any store.
fn safe(name: &str) -> String {
    if name.is_empty() {
        // The whole of a partition-key collection; `-` never occurs in a partition name.
        return "all-partitions".to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Written {
    file: RowsFile,
}

/// Backs up the step's collections by reading their rows. Called by the backup step.
pub async fn backup(ctx: &StepCtx, step: &BackupStep) -> Result<String> {
    let client = ctx.res.milvus(&step.instance).await?;
    let dst = ctx.res.storage(&step.to.bucket).await?;
    let collections = super::backup::start(ctx, step, &client, &dst).await?;
    let mut infos = Vec::new();
    let mut rows_meta = RowsMeta::default();
    for (db, name) in &collections {
        ctx.check_cancel()?;
        let c = client.with_database(db);
        let (info, rc) = backup_collection(ctx, &c, &dst, step, db, name).await?;
        infos.push(info);
        rows_meta.collections.push(rc);
    }
    let rows: u64 = infos.iter().filter_map(|c| c.planrun_row_count).sum();
    let files: u64 = rows_meta
        .collections
        .iter()
        .flat_map(|c| &c.partitions)
        .map(|p| p.files.len() as u64)
        .sum();
    let backup = BackupInfo {
        id: ctx.run.clone(),
        state_code: 2,
        name: step
            .to
            .path
            .rsplit('/')
            .next()
            .unwrap_or("backup")
            .to_string(),
        backup_timestamp: crate::checkpoint::now() * 1000,
        collection_backups: infos,
        size: 0,
        milvus_version: client.server_version().to_string(),
        format: FORMAT.to_string(),
        planrun: Some(meta::PlanrunInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            run: ctx.run.clone(),
            files,
        }),
    };
    let json = |v: &dyn erased::Json| -> bytes::Bytes { v.to_json().into() };
    // `backup_meta.json` last: without it the backup is incomplete.
    ctx.once("meta", || async {
        dst.put_bytes(&join(&step.to, ROWS_META), json(&rows_meta))
            .await?;
        dst.put_bytes(&join(&step.to, meta::FULL_META), json(&backup))
            .await?;
        let mut head = backup.clone();
        head.collection_backups.clear();
        dst.put_bytes(&join(&step.to, meta::BACKUP_META), json(&head))
            .await?;
        Ok(true)
    })
    .await?;
    Ok(format!(
        "{} collection(s), {rows} rows in {files} Parquet files into {}",
        collections.len(),
        ctx.res.plan.show_location(&step.to)
    ))
}

mod erased {
    /// Pretty JSON of any serialisable value, behind a trait object for one closure.
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec_pretty(self).expect("meta serialises")
        }
    }
}

async fn ensure_loaded(c: &MilvusClient, coll: &str) -> Result<()> {
    if c.get_load_state(coll).await? != crate::milvus::pb::common::LoadState::Loaded {
        c.load_collection(coll).await?;
        c.wait_loaded(coll, LOAD_TIMEOUT).await?;
    }
    Ok(())
}

/// Reads one partition (or, with a partition key, the whole collection) page by page into
/// Parquet files. Queries follow the key cursor one after another; each page is encoded and
/// written while the next one is queried, so the source server is kept busy instead of waiting
/// for planrun's encoder and the bucket.
#[allow(clippy::too_many_arguments)]
async fn read_unit(
    ctx: &StepCtx,
    c: &MilvusClient,
    dst: &Arc<dyn Storage>,
    step: &BackupStep,
    db: &str,
    name: &str,
    key: &str,
    partition: &str,
    names: &[String],
    pk: &str,
    cols: &[Col],
    limit: usize,
) -> Result<Vec<RowsFile>> {
    let task = |seq: usize| format!("{key}/{}/{seq:06}", safe(partition));
    let cols: Arc<Vec<Col>> = Arc::new(cols.to_vec());
    let mut files = Vec::new();
    let mut after: Option<Pk> = None;
    let mut seq = 0;
    // Finished files of an earlier run, in order. Past the first gap nothing recorded is
    // trusted: pages are queried again from the last key before it and rewritten.
    loop {
        match ctx.done::<Option<Written>>(&task(seq))? {
            Some(Some(w)) => {
                after = Some(Pk::from(&w.file.last));
                files.push(w.file);
                seq += 1;
            }
            Some(None) => return Ok(files),
            None => break,
        }
    }
    // One page queued and two being written: with the one being queried, at most four pages
    // (16 MiB each, plus their Arrow and Parquet copies while encoding) are held at once.
    let (pages_tx, pages_rx) = tokio::sync::mpsc::channel(1);
    let query = async move {
        loop {
            ctx.check_cancel()?;
            let page = ctx
                .retry("query", || async {
                    Ok(c.query_page(
                        name,
                        names,
                        pk,
                        after.as_ref(),
                        "",
                        limit,
                        &["*".to_string()],
                    )
                    .await?)
                })
                .await?;
            if page.num_rows == 0 {
                return Ok::<_, StepError>(());
            }
            after = page.last_pk.clone();
            if pages_tx.send((seq, page)).await.is_err() {
                return Ok(()); // the writer failed; its error is the one reported
            }
            seq += 1;
        }
    };
    let pages = futures::stream::unfold(pages_rx, |mut rx| async move {
        rx.recv().await.map(|page| (page, rx))
    });
    let write = pages
        .map(|(seq, page): (usize, crate::milvus::QueryPage)| {
            let cols = cols.clone();
            async move {
                let pks = page
                    .fields
                    .iter()
                    .find(|f| f.field_name == pk)
                    .and_then(crate::milvus::data::pks)
                    .unwrap_or_default();
                let (Some(first), Some(last)) = (pks.first().cloned(), pks.last().cloned()) else {
                    return fail(format!("a page of `{db}.{name}` has no primary keys"));
                };
                let rows = page.num_rows;
                // Encoding is CPU work: off the async threads, so queries and puts go on.
                let body = tokio::task::spawn_blocking(move || {
                    let batch = page_to_batch(&cols, &page.fields, page.num_rows)?;
                    to_parquet(&batch)
                })
                .await
                .map_err(|e| StepError::Failed(format!("encoding a page: {e}")))?
                .map_err(|e| {
                    StepError::Failed(format!(
                        "reading `{db}.{name}` on `{}` into Parquet: {e}",
                        step.instance
                    ))
                })?;
                let rel = format!(
                    "rows/{}/{}/{}/{seq:06}.parquet",
                    safe(db),
                    safe(name),
                    safe(partition)
                );
                dst.put_bytes(&join(&step.to, &rel), body.into()).await?;
                crate::fault::point("rows-file-written");
                let file = RowsFile {
                    key: rel,
                    rows: rows as u64,
                    first: first.into(),
                    last: last.into(),
                };
                ctx.set(
                    &task(seq),
                    TaskState::Done(to_json(&Some(Written { file: file.clone() }))),
                )
                .await?;
                ctx.events.progress(&ctx.step, rows as u64, 0);
                Ok(file)
            }
        })
        .buffered(2)
        .try_collect::<Vec<RowsFile>>();
    let (queried, written) = futures::join!(query, write);
    let written = written?;
    queried?;
    files.extend(written);
    // Files are numbered from 0 without gaps: the end marker takes the next number.
    ctx.set(
        &task(files.len()),
        TaskState::Done(to_json(&None::<Written>)),
    )
    .await?;
    Ok(files)
}

async fn backup_collection(
    ctx: &StepCtx,
    c: &MilvusClient,
    dst: &Arc<dyn Storage>,
    step: &BackupStep,
    db: &str,
    name: &str,
) -> Result<(CollectionBackupInfo, RowsCollection)> {
    let key = format!("coll/{db}.{name}");
    let desc = c.describe_collection(name).await?;
    let schema = CollectionSchema::from(&desc.schema);
    let cols = columns(&schema).map_err(|e| StepError::Failed(format!("`{db}.{name}`: {e}")))?;
    let Some(pk) = desc.primary_field().map(|f| f.name.clone()) else {
        return fail(format!(
            "`{db}.{name}` on `{}` has no primary key",
            step.instance
        ));
    };
    ensure_loaded(c, name).await?;
    let partitions = c.show_partitions(name).await?;
    let indexes = c.describe_index(name).await?;
    let limit = page_limit(&cols);
    let mut parts = Vec::new();
    let mut total = 0;
    // With a partition key Milvus routes rows itself and refuses queries naming partitions:
    // the collection is read whole, into one unit with no partition name.
    let partition_key = schema.fields.iter().any(|f| f.is_partition_key);
    let units: Vec<String> = if partition_key {
        vec![String::new()]
    } else {
        partitions.iter().map(|p| p.name.clone()).collect()
    };
    let started = std::time::Instant::now();
    for unit in units {
        let names: Vec<String> = if unit.is_empty() {
            Vec::new()
        } else {
            vec![unit.clone()]
        };
        let files = read_unit(
            ctx, c, dst, step, db, name, &key, &unit, &names, &pk, &cols, limit,
        )
        .await?;
        total += files.iter().map(|f| f.rows).sum::<u64>();
        parts.push(RowsPartition { name: unit, files });
    }
    ctx.events.phase(&ctx.step, name, "read", started);
    let info = CollectionBackupInfo {
        id: String::new(),
        collection_id: desc.collection_id,
        db_name: db.to_string(),
        collection_name: name.to_string(),
        schema,
        shards_num: desc.shards_num,
        consistency_level: desc.consistency_level as i32,
        partition_backups: partitions
            .iter()
            .map(|p| PartitionBackupInfo {
                partition_id: p.id,
                partition_name: p.name.clone(),
                collection_id: desc.collection_id,
                ..Default::default()
            })
            .collect(),
        backup_timestamp: crate::checkpoint::now() * 1000,
        size: 0,
        has_index: !indexes.is_empty(),
        index_infos: indexes
            .iter()
            .map(|i| {
                let params: std::collections::BTreeMap<String, String> =
                    i.params.iter().cloned().collect();
                meta::IndexInfo {
                    field_name: i.field_name.clone(),
                    index_name: i.index_name.clone(),
                    index_type: params.get("index_type").cloned().unwrap_or_default(),
                    params,
                }
            })
            .collect(),
        load_state: String::new(),
        properties: meta::kv_from_pairs(&desc.properties),
        aliases: desc.aliases.clone(),
        planrun_row_count: Some(total),
    };
    Ok((
        info,
        RowsCollection {
            db_name: db.to_string(),
            collection_name: name.to_string(),
            partitions: parts,
        },
    ))
}

async fn get_all(store: &Arc<dyn Storage>, key: &str) -> Result<bytes::Bytes> {
    let chunks: Vec<bytes::Bytes> = store.get(key).await?.try_collect().await?;
    Ok(chunks.concat().into())
}

/// Restores a rows backup. Called by the restore step when the backup's format is rows.
pub async fn restore(ctx: &StepCtx, step: &RestoreStep, backup: &BackupInfo) -> Result<String> {
    let from = ctx.res.storage(&step.from.bucket).await?;
    let rows_meta: RowsMeta = serde_json::from_slice(
        &get_all(&from, &join(&step.from, ROWS_META)).await?,
    )
    .map_err(|e| {
        StepError::Failed(format!(
            "the rows meta `{}/{ROWS_META}` is not valid: {e}",
            step.from
        ))
    })?;
    let client = ctx.res.milvus(&step.instance).await?;
    let colls = selected(step, backup);
    if colls.is_empty() {
        return fail(format!(
            "the backup at `{}` holds none of the collections {:?}",
            step.from, step.collections
        ));
    }
    let mut lines = Vec::new();
    for (info, target) in colls {
        ctx.check_cancel()?;
        let db = step.database.clone().unwrap_or_else(|| {
            if info.db_name.is_empty() {
                "default".into()
            } else {
                info.db_name.clone()
            }
        });
        let Some(rc) = rows_meta
            .collections
            .iter()
            .find(|c| c.db_name == info.db_name && c.collection_name == info.collection_name)
        else {
            return fail(format!(
                "the rows meta of `{}` lists no files for `{}`",
                step.from, info.collection_name
            ));
        };
        let line = restore_collection(ctx, step, &client, &from, &db, info, rc, &target).await?;
        lines.push(line);
    }
    Ok(lines.join("; "))
}

#[allow(clippy::too_many_arguments)]
async fn restore_collection(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    from: &Arc<dyn Storage>,
    db: &str,
    info: &CollectionBackupInfo,
    rc: &RowsCollection,
    target: &str,
) -> Result<String> {
    let key = format!("coll/{db}.{target}");
    if let Some(line) = ctx.done::<String>(&key)? {
        return Ok(line);
    }
    let c = client.with_database(db);
    let cols = columns(&info.schema)
        .map_err(|e| StepError::Failed(format!("`{}`: {e}", info.collection_name)))?;
    // Keys are kept as they were: the copy gets the same primary keys, so auto id is off.
    let mut schema = info.schema.clone();
    schema.auto_id = false;
    for f in &mut schema.fields {
        f.auto_id = false;
    }
    if let Some(line) =
        super::restore::create_target(ctx, step, &c, db, &key, target, info, &schema, false).await?
    {
        return Ok(line);
    }
    ctx.once(&format!("{key}/partitions"), || async {
        for p in &rc.partitions {
            if !p.name.is_empty() && !c.has_partition(target, &p.name).await? {
                c.create_partition(target, &p.name).await?;
            }
        }
        Ok(true)
    })
    .await?;
    let pk = info
        .schema
        .fields
        .iter()
        .find(|f| f.is_primary_key)
        .map(|f| f.name.clone())
        .unwrap_or_default();
    let total: u64 = rc
        .partitions
        .iter()
        .flat_map(|p| &p.files)
        .map(|f| f.rows)
        .sum();
    ctx.events.planned(&ctx.step, total, 0);
    let started = std::time::Instant::now();
    // Files a crashed run may have inserted are reconciled first, one by one: count the file's
    // key range in the target; all there → done, some → delete them and insert the file again.
    let mut queryable = false;
    let mut todo: Vec<(String, RowsFile)> = Vec::new();
    for p in &rc.partitions {
        for f in &p.files {
            let task = format!("{key}/insert/{}", f.key);
            match ctx.state(&task)? {
                Some(TaskState::Done(_)) => continue,
                Some(TaskState::Intent(_)) => {
                    if !queryable {
                        make_queryable(ctx, &c, target, info).await?;
                        queryable = true;
                    }
                    let range = format!(
                        "{pk} >= {} and {pk} <= {}",
                        Pk::from(&f.first).to_expr(),
                        Pk::from(&f.last).to_expr()
                    );
                    let have = c.query_count(target, &[], &range).await?;
                    if have == f.rows {
                        ctx.set(&task, TaskState::Done(to_json(&f.rows))).await?;
                        ctx.events.progress(&ctx.step, f.rows, 0);
                        continue;
                    }
                    if have > 0 {
                        let keys = file_keys(from, step, &cols, &pk, f).await?;
                        c.delete(target, None, &format!("{pk} in [{keys}]")).await?;
                    }
                }
                _ => {}
            }
            todo.push((p.name.clone(), f.clone()));
        }
    }
    // The rest, `concurrency` files at a time (files never share a key, so their inserts are
    // independent): the target server works on one insert while the next file is decoded.
    let cols = Arc::new(cols);
    let c = &c;
    let key = key.as_str();
    futures::stream::iter(todo)
        .map(|(partition, f): (String, RowsFile)| {
            let cols = cols.clone();
            async move {
                ctx.check_cancel()?;
                let task = format!("{key}/insert/{}", f.key);
                let data = get_all(from, &join(&step.from, &f.key)).await?;
                let where_ = format!("`{}/{}`", step.from, f.key);
                let pages = tokio::task::spawn_blocking(move || {
                    from_parquet(data)?
                        .iter()
                        .map(|b| Ok((batch_to_fields(&cols, b)?, b.num_rows() as u32)))
                        .collect::<std::result::Result<Vec<_>, String>>()
                })
                .await
                .map_err(|e| StepError::Failed(format!("decoding {where_}: {e}")))?
                .map_err(|e| StepError::Failed(format!("reading {where_}: {e}")))?;
                ctx.set(&task, TaskState::Intent(to_json(&f.rows))).await?;
                let part = (!partition.is_empty()).then_some(partition.as_str());
                for (fields, n) in pages {
                    c.insert(target, part, fields, n).await?;
                }
                crate::fault::point("rows-inserted");
                ctx.set(&task, TaskState::Done(to_json(&f.rows))).await?;
                ctx.events.progress(&ctx.step, f.rows, 0);
                Ok::<_, StepError>(())
            }
        })
        .buffer_unordered(ctx.concurrency())
        .try_collect::<Vec<()>>()
        .await?;
    ctx.events.phase(&ctx.step, target, "insert", started);
    let started = std::time::Instant::now();
    if step.indexes || step.load {
        make_queryable(ctx, c, target, info).await?;
    }
    let mut counted = String::new();
    if step.load {
        let got = c.query_count(target, &[], "").await?;
        if got != total {
            return fail(format!(
                "`{target}` on `{}` holds {got} rows after the restore, the backup of `{}` had \
                 {total}; the collection was kept for inspection",
                step.instance, info.collection_name
            ));
        }
        counted = format!(", {got} rows verified by count");
    }
    if step.indexes || step.load {
        ctx.events
            .phase(&ctx.step, target, "index and load", started);
    }
    let line = format!(
        "`{}` → `{target}`: {} partitions, {total} rows inserted from Parquet{counted}",
        info.collection_name,
        rc.partitions.len()
    );
    ctx.set(&key, TaskState::Done(to_json(&line))).await?;
    Ok(line)
}

/// The keys of one file, as an expression list, to delete a partly inserted file.
async fn file_keys(
    from: &Arc<dyn Storage>,
    step: &RestoreStep,
    cols: &[Col],
    pk: &str,
    f: &RowsFile,
) -> Result<String> {
    let batches = from_parquet(get_all(from, &join(&step.from, &f.key)).await?)
        .map_err(|e| StepError::Failed(format!("reading `{}/{}`: {e}", step.from, f.key)))?;
    let mut keys = Vec::new();
    for b in &batches {
        let fields = batch_to_fields(cols, b).map_err(StepError::Failed)?;
        if let Some(col) = fields.iter().find(|x| x.field_name == pk) {
            keys.extend(crate::milvus::data::pks(col).unwrap_or_default());
        }
    }
    Ok(keys.iter().map(Pk::to_expr).collect::<Vec<_>>().join(", "))
}

/// Indexes (as in the backup) and load: needed to query the copy, and wanted at the end.
async fn make_queryable(
    ctx: &StepCtx,
    c: &MilvusClient,
    target: &str,
    info: &CollectionBackupInfo,
) -> Result<()> {
    let have = c.describe_index(target).await?;
    for idx in &info.index_infos {
        if !have.iter().any(|h| h.field_name == idx.field_name) {
            let params: Vec<(String, String)> = idx.params.clone().into_iter().collect();
            if let Err(e) = c
                .create_index(target, &idx.field_name, &idx.index_name, &params)
                .await
            {
                // Milvus Lite reports an index without its build params (no `nlist`), which
                // another server may refuse: fall back to AUTOINDEX with the same metric.
                let metric: Vec<(String, String)> = idx
                    .params
                    .iter()
                    .filter(|(k, _)| k.as_str() == "metric_type")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain([("index_type".to_string(), "AUTOINDEX".to_string())])
                    .collect();
                ctx.events.warn(
                    &ctx.step,
                    format!(
                        "index `{}` of `{target}` could not be created as in the backup ({e}); \
                         creating AUTOINDEX instead",
                        idx.index_name
                    ),
                );
                c.create_index(target, &idx.field_name, &idx.index_name, &metric)
                    .await?;
            }
        }
    }
    ctx.once(&format!("coll/{}.{target}/load", c.database()), || async {
        c.load_collection(target).await?;
        c.wait_loaded(target, LOAD_TIMEOUT).await?;
        Ok(true)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milvus::data::{
        dynamic_column, float_vector_column, int64_column, json_column, varchar_column,
    };

    fn schema() -> CollectionSchema {
        let f = |name: &str, ty: DataType, params: &[(&str, &str)], pk: bool| meta::FieldSchema {
            field_id: 100,
            name: name.into(),
            data_type: ty as i32,
            is_primary_key: pk,
            type_params: params
                .iter()
                .map(|(k, v)| meta::KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        CollectionSchema {
            fields: vec![
                f("pk", DataType::Int64, &[], true),
                f("vec", DataType::FloatVector, &[("dim", "2")], false),
                f("title", DataType::VarChar, &[("max_length", "10")], false),
                f("meta", DataType::Json, &[], false),
            ],
            enable_dynamic_field: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_page_round_trips_through_parquet() {
        let cols = columns(&schema()).unwrap();
        let page = vec![
            varchar_column("title", vec!["a".into(), "b".into()]),
            int64_column("pk", vec![1, 2]),
            float_vector_column("vec", 2, vec![0.5, 1.5, -2.0, 3.25]),
            json_column("meta", vec![br#"{"x":1}"#.to_vec(), b"[1,2]".to_vec()]),
            dynamic_column(vec![b"{}".to_vec(), br#"{"extra":"y"}"#.to_vec()]),
        ];
        let batch = page_to_batch(&cols, &page, 2).unwrap();
        let back = from_parquet(to_parquet(&batch).unwrap().into()).unwrap();
        assert_eq!(back.len(), 1);
        let fields = batch_to_fields(&cols, &back[0]).unwrap();
        let a = super::super::verify::hash_rows(&page, "pk", 2).unwrap();
        let b = super::super::verify::hash_rows(&fields, "pk", 2).unwrap();
        assert_eq!(a, b, "every value survives the round trip");
        let dynamic = fields.iter().find(|f| f.is_dynamic).unwrap();
        assert_eq!(dynamic.field_name, "$meta");
    }

    #[test]
    fn a_missing_column_is_named() {
        let cols = columns(&schema()).unwrap();
        let err = page_to_batch(&cols, &[int64_column("pk", vec![1])], 1).unwrap_err();
        assert!(err.contains("`vec`"), "{err}");
    }
}
