//! Parquet bytes ⇄ Arrow record batches: how pages are written to a file and read back.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn props() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build()
}

/// A Parquet file written page by page into `W`: each page is a row group of its own, passed
/// to `W` as soon as it is written, so only the page being encoded is held in memory; and a
/// reader can insert the file row group by row group, each as large as a page.
pub struct PageFile<W: Write + Send> {
    w: ArrowWriter<W>,
}

impl<W: Write + Send> PageFile<W> {
    pub fn new(out: W, schema: SchemaRef) -> Result<Self, String> {
        let w = ArrowWriter::try_new(out, schema, Some(props())).map_err(|e| e.to_string())?;
        Ok(PageFile { w })
    }

    /// Writes one page as the next row group.
    pub fn write(&mut self, page: &RecordBatch) -> Result<(), String> {
        self.w.write(page).map_err(|e| e.to_string())?;
        self.w.flush().map_err(|e| e.to_string())
    }

    /// Bytes passed to `W` so far.
    pub fn bytes(&self) -> u64 {
        self.w.bytes_written() as u64
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

/// How many row groups (pages) a file holds.
pub fn row_groups(data: &bytes::Bytes) -> Result<usize, String> {
    let b = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| e.to_string())?;
    Ok(b.metadata().num_row_groups())
}

/// Row group `i` of a file as one batch (a page: inserted as one request).
pub fn row_group(data: &bytes::Bytes, i: usize) -> Result<RecordBatch, String> {
    let b = ParquetRecordBatchReaderBuilder::try_new(data.clone()).map_err(|e| e.to_string())?;
    let rows = b.metadata().row_group(i).num_rows().max(1) as usize;
    let schema = b.schema().clone();
    let mut r = b
        .with_row_groups(vec![i])
        .with_batch_size(rows)
        .build()
        .map_err(|e| e.to_string())?;
    match r.next() {
        Some(batch) => batch.map_err(|e| e.to_string()),
        None => Ok(RecordBatch::new_empty(schema)),
    }
}

/// Every row group of a file, one batch each.
pub fn from_parquet(data: bytes::Bytes) -> Result<Vec<RecordBatch>, String> {
    (0..row_groups(&data)?)
        .map(|i| row_group(&data, i))
        .collect()
}
