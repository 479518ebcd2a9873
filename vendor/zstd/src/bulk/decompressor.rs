use crate::map_error_code;

#[cfg(feature = "experimental")]
use std::convert::TryInto;
use std::io;
use zstd_safe;

/// Allows to decompress independently multiple blocks of data.
///
/// This reduces memory usage compared to calling `decompress` multiple times.
///
/// SecureNet's copy (see `vendor/README.md`): a decompressor made without a
/// dictionary takes its context from a process-wide pool and gives it back,
/// reset, when dropped. A Parquet reader builds one per column chunk it
/// decodes; creating a zstd context runs `cpuid` three times, which a
/// virtual machine traps (~4.4 µs each on SecureNet's benchmark machine),
/// so the contexts are made once and reused.
#[derive(Default)]
pub struct Decompressor<'a> {
    context: Context<'a>,
}

/// Contexts kept for reuse at most; more are freed when dropped.
const POOLED: usize = 64;

static POOL: std::sync::Mutex<Vec<zstd_safe::DCtx<'static>>> =
    std::sync::Mutex::new(Vec::new());

enum Context<'a> {
    /// From the pool, with no dictionary lent to it: back to it on drop.
    Pooled(zstd_safe::DCtx<'static>),
    /// Made for this decompressor (it may borrow a dictionary for `'a`).
    Own(zstd_safe::DCtx<'a>),
    /// Only while the context moves from one variant to the other.
    Moving,
}

impl Default for Context<'_> {
    fn default() -> Self {
        Context::Own(zstd_safe::DCtx::default())
    }
}

impl Drop for Decompressor<'_> {
    fn drop(&mut self) {
        if let Context::Pooled(mut context) =
            std::mem::replace(&mut self.context, Context::Moving)
        {
            // Parameters and any dictionary loaded into it go; a context
            // that cannot be reset is freed instead.
            if context
                .reset(zstd_safe::ResetDirective::SessionAndParameters)
                .is_ok()
            {
                let mut pool = POOL
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if pool.len() < POOLED {
                    pool.push(context);
                }
            }
        }
    }
}

impl<'a> Decompressor<'a> {
    /// The context as one this decompressor owns, for it to borrow a
    /// dictionary for `'a` (a pooled context leaves the pool).
    fn own_context(&mut self) -> &mut zstd_safe::DCtx<'a> {
        let context = match std::mem::replace(&mut self.context, Context::Moving) {
            Context::Pooled(context) => context,
            Context::Own(context) => context,
            Context::Moving => zstd_safe::DCtx::default(),
        };
        self.context = Context::Own(context);
        match &mut self.context {
            Context::Own(context) => context,
            Context::Pooled(_) | Context::Moving => unreachable!("just set"),
        }
    }
}

/// `$body` with `$context` bound to the decompressor's context.
macro_rules! with_context {
    ($self:ident, $context:ident => $body:expr) => {
        match &mut $self.context {
            Context::Pooled($context) => $body,
            Context::Own($context) => $body,
            Context::Moving => Err(io::Error::new(
                io::ErrorKind::Other,
                "zstd decompressor without a context",
            )),
        }
    };
}

impl Decompressor<'static> {
    /// Creates a new zstd decompressor.
    pub fn new() -> io::Result<Self> {
        Self::with_dictionary(&[])
    }

    /// Creates a new zstd decompressor, using the given dictionary.
    pub fn with_dictionary(dictionary: &[u8]) -> io::Result<Self> {
        let reused = POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let mut decompressor = Self {
            context: Context::Pooled(reused.unwrap_or_default()),
        };
        if dictionary.is_empty() {
            return Ok(decompressor);
        }

        decompressor.set_dictionary(dictionary)?;

        Ok(decompressor)
    }
}

impl<'a> Decompressor<'a> {
    /// Creates a new decompressor using an existing `DecoderDictionary`.
    ///
    /// Note that using a dictionary means that compression will need to use
    /// the same dictionary.
    pub fn with_prepared_dictionary<'b>(
        dictionary: &'a crate::dict::DecoderDictionary<'b>,
    ) -> io::Result<Self>
    where
        'b: 'a,
    {
        let mut decompressor = Self::default();

        decompressor.set_prepared_dictionary(dictionary)?;

        Ok(decompressor)
    }

    /// Changes the dictionary used by this decompressor.
    ///
    /// Will affect future compression jobs.
    ///
    /// Note that using a dictionary means that compression will need to use
    /// the same dictionary.
    pub fn set_dictionary(&mut self, dictionary: &[u8]) -> io::Result<()> {
        with_context!(self, context => context
            .load_dictionary(dictionary)
            .map_err(map_error_code))?;

        Ok(())
    }

    /// Changes the dictionary used by this decompressor.
    ///
    /// Note that using a dictionary means that compression will need to use
    /// the same dictionary.
    pub fn set_prepared_dictionary<'b>(
        &mut self,
        dictionary: &'a crate::dict::DecoderDictionary<'b>,
    ) -> io::Result<()>
    where
        'b: 'a,
    {
        self.own_context()
            .ref_ddict(dictionary.as_ddict())
            .map_err(map_error_code)?;

        Ok(())
    }

    /// Deompress a single block of data to the given destination buffer.
    ///
    /// Returns the number of bytes written, or an error if something happened
    /// (for instance if the destination buffer was too small).
    pub fn decompress_to_buffer<C: zstd_safe::WriteBuf + ?Sized>(
        &mut self,
        source: &[u8],
        destination: &mut C,
    ) -> io::Result<usize> {
        with_context!(self, context => context
            .decompress(destination, source)
            .map_err(map_error_code))
    }

    /// Decompress a block of data, and return the result in a `Vec<u8>`.
    ///
    /// The decompressed data should be at most `capacity` bytes,
    /// or an error will be returned.
    pub fn decompress(
        &mut self,
        data: &[u8],
        capacity: usize,
    ) -> io::Result<Vec<u8>> {
        let capacity =
            Self::upper_bound(data).unwrap_or(capacity).min(capacity);
        let mut buffer = Vec::with_capacity(capacity);
        self.decompress_to_buffer(data, &mut buffer)?;
        Ok(buffer)
    }

    /// Sets a decompression parameter for this decompressor.
    pub fn set_parameter(
        &mut self,
        parameter: zstd_safe::DParameter,
    ) -> io::Result<()> {
        with_context!(self, context => context
            .set_parameter(parameter)
            .map_err(map_error_code))?;
        Ok(())
    }

    crate::decoder_parameters!();

    /// Get an upper bound on the decompressed size of data, if available
    ///
    /// This can be used to pre-allocate enough capacity for `decompress_to_buffer`
    /// and is used by `decompress` to ensure that it does not over-allocate if
    /// you supply a large `capacity`.
    ///
    /// Will return `None` if the upper bound cannot be determined or is larger than `usize::MAX`
    ///
    /// Note that unless the `experimental` feature is enabled, this will always return `None`.
    pub fn upper_bound(_data: &[u8]) -> Option<usize> {
        #[cfg(feature = "experimental")]
        {
            let bound = zstd_safe::decompress_bound(_data).ok()?;
            bound.try_into().ok()
        }
        #[cfg(not(feature = "experimental"))]
        {
            None
        }
    }
}

fn _assert_traits() {
    fn _assert_send<T: Send>(_: T) {}

    _assert_send(Decompressor::new());
}
