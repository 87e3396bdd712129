//! Parquet bytes ⇄ Arrow record batches: how pages are written to a file and read back.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Bytes a row group grows to before it is written out. Milvus 2.3.5's Parquet import took a
/// file of 16 MiB row groups in 11–19 s and the same rows in row groups of 64 MiB or more in
/// 9–10 s (docs/benchmarks.md, benchmark 8); a writer holds one row group in memory per file.
pub const ROW_GROUP_BYTES: usize = 64 << 20;

/// Bytes an insert of a restore is sized for, as the backup's pages are on the wire.
pub const INSERT_BYTES: usize = 16 << 20;

fn props() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .build()
}

/// A Parquet file written page by page into `W`, in row groups of about `ROW_GROUP_BYTES`,
/// each passed to `W` as soon as it is full: one row group is held in memory, however large
/// the file.
pub struct PageFile<W: Write + Send> {
    w: ArrowWriter<W>,
}

impl<W: Write + Send> PageFile<W> {
    pub fn new(out: W, schema: SchemaRef) -> Result<Self, String> {
        let w = ArrowWriter::try_new(out, schema, Some(props())).map_err(|e| e.to_string())?;
        Ok(PageFile { w })
    }

    /// Adds one page to the row group being written.
    pub fn write(&mut self, page: &RecordBatch) -> Result<(), String> {
        self.w.write(page).map_err(|e| e.to_string())
    }

    /// Bytes of the file so far: passed to `W`, and the row group held, as it will be encoded.
    pub fn bytes(&self) -> u64 {
        (self.w.bytes_written() + self.w.in_progress_size()) as u64
    }

    /// Writes the footer and gives `W` back.
    pub fn finish(self) -> Result<W, String> {
        self.w.into_inner().map_err(|e| e.to_string())
    }
}

/// A file of one page, in memory.
pub fn to_parquet(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut f = PageFile::new(Vec::new(), batch.schema())?;
    f.write(batch)?;
    f.finish()
}

/// How many row groups a file holds.
pub fn row_groups(data: &bytes::Bytes) -> Result<usize, String> {
    let b = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| e.to_string())?;
    Ok(b.metadata().num_row_groups())
}

/// Row group `i` of a file, in batches of about `INSERT_BYTES` (each inserted as one request;
/// older backups wrote a page per row group, which is one batch).
pub fn row_group(data: &bytes::Bytes, i: usize) -> Result<Vec<RecordBatch>, String> {
    let b = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| e.to_string())?;
    let group = b.metadata().row_group(i);
    let rows = group.num_rows().max(1) as usize;
    let per_row = (group.total_byte_size().max(1) as usize).div_ceil(rows);
    let batch = (INSERT_BYTES / per_row).clamp(1, rows);
    b.with_row_groups(vec![i])
        .with_batch_size(batch)
        .build()
        .map_err(|e| e.to_string())?
        .map(|b| b.map_err(|e| e.to_string()))
        .collect()
}

/// Every row group of a file, in batches of about `INSERT_BYTES`.
pub fn from_parquet(data: bytes::Bytes) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::new();
    for i in 0..row_groups(&data)? {
        out.extend(row_group(&data, i)?);
    }
    Ok(out)
}
