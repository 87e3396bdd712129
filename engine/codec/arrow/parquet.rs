//! Parquet bytes ⇄ Arrow record batches: how a batch is written to a file and read back.

use arrow_array::RecordBatch;

pub fn to_parquet(batch: &RecordBatch) -> std::result::Result<Vec<u8>, String> {
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

pub fn from_parquet(data: bytes::Bytes) -> std::result::Result<Vec<RecordBatch>, String> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| e.to_string())?
        .with_batch_size(1 << 20)
        .build()
        .map_err(|e| e.to_string())?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}
